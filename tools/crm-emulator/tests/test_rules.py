"""Request rules of each CRM: what is refused whole, what fails per record, and the answer shapes."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shopbotly.crm_emulator import salesforce_rules as sf
from shopbotly.crm_emulator.generic_rules import GenericRejected, parse_lead
from shopbotly.crm_emulator.hubspot_rules import (
    CONTACT_PROPERTIES,
    PropertySchema,
    RequestRejected,
    batch_response,
    parse_batch_upsert,
    parse_engagement,
)
from shopbotly.crm_emulator.oauth import ClientSpec, OAuthError, check_jwt_assertion

pytestmark = pytest.mark.unit

SCHEMA = PropertySchema(known=CONTACT_PROPERTIES | {"shopbotly_tags"})


def upsert_input(email: str, **props: Any) -> dict[str, Any]:
    return {"id": email, "idProperty": "email", "properties": props}


class TestHubSpotBatchUpsert:
    def test_valid_inputs_are_normalized(self) -> None:
        valid, errors = parse_batch_upsert(
            {"inputs": [upsert_input("Jane@Example.com", firstname="Jane", numemployees=12)]}, SCHEMA, 100
        )
        assert errors == []
        assert valid[0].id == "jane@example.com"
        assert valid[0].properties == {"firstname": "Jane", "numemployees": "12", "email": "jane@example.com"}

    def test_more_than_limit_refuses_the_request(self) -> None:
        body = {"inputs": [upsert_input(f"u{i}@example.com") for i in range(101)]}
        with pytest.raises(RequestRejected) as err:
            parse_batch_upsert(body, SCHEMA, 100)
        assert err.value.status == 400
        assert err.value.body["category"] == "VALIDATION_ERROR"
        assert "maximum number of inputs supported in a batch request is 100" in err.value.body["message"]
        assert (
            parse_batch_upsert({"inputs": body["inputs"][:100]}, SCHEMA, 100)[0][99].id == "u99@example.com"
        )

    def test_duplicate_ids_refuse_the_request(self) -> None:
        body = {"inputs": [upsert_input("a@example.com"), upsert_input("A@example.com")]}
        with pytest.raises(RequestRejected, match="Duplicate IDs"):
            parse_batch_upsert(body, SCHEMA, 100)

    def test_invalid_email_fails_only_that_record(self) -> None:
        body = {
            "inputs": [
                upsert_input("ok@example.com"),
                {**upsert_input("not-an-email"), "objectWriteTraceId": "t-1"},
            ]
        }
        valid, errors = parse_batch_upsert(body, SCHEMA, 100)
        assert [v.id for v in valid] == ["ok@example.com"]
        (error,) = errors
        assert error["status"] == "error" and error["category"] == "VALIDATION_ERROR"
        assert error["context"] == {"ids": ["not-an-email"]}
        assert error["objectWriteTraceId"] == "t-1"
        assert error["errors"][0]["code"] == "INVALID_EMAIL"
        problems = json.loads(error["message"].removeprefix("Property values were not valid: "))
        assert problems[0] == {
            "isValid": False,
            "message": "Email address not-an-email is invalid",
            "error": "INVALID_EMAIL",
            "name": "email",
        }

    def test_unknown_and_read_only_properties_fail_the_record_when_strict(self) -> None:
        body = {
            "inputs": [
                upsert_input("a@example.com", first_name="A"),
                upsert_input("b@example.com", hs_object_id="1"),
                upsert_input("c@example.com", shopbotly_last_order="42"),
            ]
        }
        valid, errors = parse_batch_upsert(body, SCHEMA, 100)
        assert [v.id for v in valid] == ["c@example.com"]
        assert [e["errors"][0]["code"] for e in errors] == ["PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"]
        lenient = PropertySchema(known=frozenset(), strict=False)
        assert len(parse_batch_upsert(body, lenient, 100)[0]) == 2  # read-only still refused

    @pytest.mark.parametrize(
        "body",
        [
            [],
            {"inputs": "x"},
            {"inputs": [{"id": "a@example.com", "properties": {}}]},
            {"inputs": [{"id": "a@example.com", "idProperty": "phone"}]},
            {"inputs": [upsert_input("a@example.com", firstname={"nested": 1})]},
        ],
    )
    def test_malformed_requests_are_refused_whole(self, body: Any) -> None:
        with pytest.raises(RequestRejected) as err:
            parse_batch_upsert(body, SCHEMA, 100)
        assert err.value.status == 400

    def test_response_is_200_or_207(self) -> None:
        status, body = batch_response([{"id": "1"}], [], 1.0, 2.0)
        assert status == 200 and "errors" not in body and body["status"] == "COMPLETE"
        status, body = batch_response([], [{"status": "error"}], 1.0, 2.0)
        assert status == 207 and body["numErrors"] == 1 and body["results"] == []


class TestHubSpotEngagements:
    def test_note_needs_timestamp_and_note_association_type(self) -> None:
        with pytest.raises(RequestRejected, match="hs_timestamp is required"):
            parse_engagement("notes", {"properties": {"hs_note_body": "x"}})
        wrong_type = {
            "properties": {"hs_timestamp": "1700000000000"},
            "associations": [
                {
                    "to": {"id": "1"},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 16}],
                }
            ],
        }
        with pytest.raises(RequestRejected, match="associationTypeId 202"):
            parse_engagement("notes", wrong_type)
        wrong_type["associations"][0]["types"][0]["associationTypeId"] = 202  # type: ignore[index]
        note = parse_engagement("notes", wrong_type)
        assert note.contact_ids == ["1"] and note.properties["hs_timestamp"] == "2023-11-14T22:13:20.000Z"

    def test_ticket_pipeline_stage_and_priority(self) -> None:
        base = {"subject": "Help", "hs_pipeline": "0", "hs_pipeline_stage": "1"}
        assert parse_engagement("tickets", {"properties": base}).properties == base
        with pytest.raises(RequestRejected, match="not a valid pipeline stage"):
            parse_engagement("tickets", {"properties": {**base, "hs_pipeline_stage": "9"}})
        with pytest.raises(RequestRejected, match="allowed options"):
            parse_engagement("tickets", {"properties": {**base, "hs_ticket_priority": "SOON"}})
        with pytest.raises(RequestRejected, match="subject is required"):
            parse_engagement("tickets", {"properties": {"hs_pipeline": "0", "hs_pipeline_stage": "1"}})


LEAD = sf.SOBJECTS["Lead"]
EXT = "ShopBotly_Email__c"


def sf_record(**fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Lead"}, **fields}


class TestSalesforceCollections:
    def test_more_than_200_records_is_exceeded_id_limit(self) -> None:
        records = [sf_record(**{EXT: f"u{i}@example.com"}) for i in range(201)]
        with pytest.raises(sf.SalesforceRejected) as err:
            sf.parse_collection_upsert({"records": records}, LEAD, EXT, 200)
        assert err.value.status == 400
        assert err.value.body == [
            {
                "message": "record limit reached. cannot submit more than 200 records into this call",
                "errorCode": "EXCEEDED_ID_LIMIT",
            }
        ]

    def test_per_record_problems(self) -> None:
        records = [
            sf_record(**{EXT: "ok@example.com", "LastName": "Ok"}),
            sf_record(LastName="NoKey"),
            sf_record(**{EXT: "bad-email", "LastName": "X"}),
            sf_record(**{EXT: "id@example.com", "Id": "not-an-id"}),
            sf_record(**{EXT: "dup@example.com"}),
            sf_record(**{EXT: "DUP@example.com"}),
        ]
        all_or_none, valid, errors = sf.parse_collection_upsert({"records": records}, LEAD, EXT, 200, [EXT])
        assert all_or_none is False
        assert [r.index for r in valid] == [0]
        assert {i: [e["statusCode"] for e in errs] for i, errs in errors.items()} == {
            1: ["MISSING_ARGUMENT"],
            2: ["INVALID_EMAIL_ADDRESS"],
            3: ["MALFORMED_ID"],
            4: ["DUPLICATE_EXTERNAL_ID"],
            5: ["DUPLICATE_EXTERNAL_ID"],
        }
        assert errors[2][0]["fields"] == [EXT]

    @pytest.mark.parametrize(
        ("records", "code"),
        [
            ([{"LastName": "x"}], "INVALID_TYPE"),
            ([{"attributes": {"type": "Contact"}}], "INVALID_TYPE"),
            ([sf_record(NoSuchField="x")], "INVALID_FIELD"),
            # A custom field the org has not created (only EXT exists here).
            ([sf_record(**{EXT: "a@example.com", "Plan__c": "pro"})], "INVALID_FIELD"),
        ],
    )
    def test_malformed_records_refuse_the_request(self, records: list[dict[str, Any]], code: str) -> None:
        with pytest.raises(sf.SalesforceRejected) as err:
            sf.parse_collection_upsert({"records": records}, LEAD, EXT, 200, [EXT])
        assert err.value.body[0]["errorCode"] == code

    def test_external_id_field(self) -> None:
        assert sf.external_id_field(LEAD, EXT, [EXT]) == EXT
        with pytest.raises(sf.SalesforceRejected, match="Provided external ID field does not exist"):
            sf.external_id_field(LEAD, "Email", [EXT])
        with pytest.raises(sf.SalesforceRejected):
            sf.external_id_field(LEAD, "Other__c", [EXT])
        with pytest.raises(sf.SalesforceRejected):  # a fresh org has none
            sf.external_id_field(LEAD, EXT, [])
        assert sf.external_id_field(LEAD, "shopbotly_email__c", [EXT]) == EXT

    def test_unknown_columns_are_refused_in_salesforce_words(self) -> None:
        for name in ("Foo__c", "MailingCity"):  # a custom field nobody created; a Contact field
            with pytest.raises(sf.SalesforceRejected) as err:
                sf.canonical_fields(LEAD, {"LastName": "Doe", name: "x"}, [EXT])
            assert err.value.status == 400
            assert err.value.body == [
                {
                    "message": f"No such column '{name}' on sobject of type Lead",
                    "errorCode": "INVALID_FIELD",
                    "fields": [],
                }
            ]
        assert sf.canonical_fields(LEAD, {"shopbotly_EMAIL__c": "a@b.c"}, [EXT]) == {EXT: "a@b.c"}

    def test_field_names_are_case_insensitive(self) -> None:
        assert sf.canonical_fields(LEAD, {"lastname": "Doe", "COMPANY": "Acme"}) == {
            "LastName": "Doe",
            "Company": "Acme",
        }
        assert sf.required_missing(LEAD, {"LastName": "Doe"}) == {
            "statusCode": "REQUIRED_FIELD_MISSING",
            "message": "Required fields are missing: [Company]",
            "fields": ["Company"],
        }


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class TestJwtBearer:
    AUD = "https://login.salesforce.com"

    def assertion(self, private: str, **claims: Any) -> str:
        base = {
            "iss": "app",
            "sub": "integration@example.com",
            "aud": self.AUD,
            "exp": int(time.time()) + 180,
        }
        return jwt.encode({**base, **claims}, private, algorithm="RS256")

    def test_valid_assertion(self, rsa_keys: tuple[str, str]) -> None:
        private, public = rsa_keys
        client = ClientSpec("app", None, public, frozenset({"integration@example.com"}))
        found, subject = check_jwt_assertion(self.assertion(private), [client], [self.AUD], time.time())
        assert found is client and subject == "integration@example.com"

    @pytest.mark.parametrize(
        ("claims", "error", "description"),
        [
            ({"aud": "https://evil.example.com"}, "invalid_grant", "audience is invalid"),
            ({"exp": int(time.time()) - 10}, "invalid_grant", "invalid assertion"),
            ({"iss": "other-app"}, "invalid_client_id", "client identifier invalid"),
            ({"sub": "someone@example.com"}, "invalid_grant", "user hasn't approved this consumer"),
        ],
    )
    def test_refusals(
        self, rsa_keys: tuple[str, str], claims: dict[str, Any], error: str, description: str
    ) -> None:
        private, public = rsa_keys
        client = ClientSpec("app", None, public, frozenset({"integration@example.com"}))
        with pytest.raises(OAuthError) as err:
            check_jwt_assertion(self.assertion(private, **claims), [client], [self.AUD], time.time())
        assert (err.value.error, err.value.description) == (error, description)

    def test_signature_by_another_key_is_refused(self, rsa_keys: tuple[str, str]) -> None:
        _, public = rsa_keys
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other_pem = other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        with pytest.raises(OAuthError, match="invalid assertion"):
            check_jwt_assertion(
                self.assertion(other_pem), [ClientSpec("app", None, public, None)], [self.AUD], time.time()
            )


class TestGenericLead:
    def test_fields_tags_and_identity(self) -> None:
        identity, fields = parse_lead(
            {"email": "Jo@Example.com", "firstname": "Jo", "age": 3, "tags": ["a", "b"]}
        )
        assert identity == "jo@example.com"
        assert fields == {"firstname": "Jo", "age": "3", "tags": "a;b", "email": "jo@example.com"}

    def test_fields_object_is_merged_under_top_level_fields(self) -> None:
        _, fields = parse_lead(
            {"email": "a@example.com", "fields": {"firstname": "A", "city": "Oslo"}, "city": "Rome"}
        )
        assert fields == {"firstname": "A", "city": "Rome", "email": "a@example.com"}

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"email": "nope"}, "email"),
            ({"email": "a@example.com", "fields": ["x"]}, "fields"),
            ({"email": "a@example.com", "tags": "vip"}, "tags"),
            ({"email": "a@example.com", "Bad-Name": "x"}, "Bad-Name"),
            ({"email": "a@example.com", "id": "x"}, "id"),
            ({"email": "a@example.com", "address": {"city": "x"}}, "address"),
        ],
    )
    def test_validation_names_the_field(self, body: dict[str, Any], field: str) -> None:
        with pytest.raises(GenericRejected) as err:
            parse_lead(body)
        assert err.value.status == 422
        assert field in err.value.body["error"]["fields"]
