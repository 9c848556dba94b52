"""Where on the ledger topic each applied command id is: a compact index, 16 bytes an id.

Pure (no I/O). The ledger keeps every applied id for as long as the compacted topic does (for ever, unless a
tombstone removes it), so holding the ids themselves (a str key and a dict of CRM ids, about 150 bytes an
entry) grows without bound. This index holds two 64-bit words an id: the record's place on the topic
(partition and offset) in the order the records were read, and a sorted word of the top 32 bits of the id's
blake2b digest with that place's number. A lookup returns the places whose digest matches; the ledger reads
those records back to confirm the key and to get the CRM ids, so a digest collision (one id in 2**32 / n)
costs one extra read, never a skipped command. Ids are never missed: every record read is indexed, and
nothing is taken out of the index (a tombstone is checked by the ledger, by offset).

The sorted words are kept in runs (size-tiered: a run joins the one before it while that one is no bigger,
up to `MAX_RUN` words). Each run has a fence (where each range of
digest prefixes starts, one 4-byte entry for about four words) so a lookup is a short binary search a run.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from array import array

__all__ = ["MAX_RUN", "STAGED", "AppliedIndex", "digest32"]

_WORD_BITS = 64

_SEQ_BITS = 32
_SEQ_MASK = (1 << _SEQ_BITS) - 1
# A place is partition << 48 | offset (2**48 offsets: about 9,000 years at a million records a second).
_OFFSET_BITS = 48
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
STAGED = 4096  # ids indexed one by one (a dict) before they are sorted into a run
MAX_RUN = 1 << 20  # merging stops here (a merge copies both runs: at most 8 MiB a word array)


def digest32(command_id: str) -> int:
    """The id's 32-bit index digest (blake2b: the same in every process, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(command_id.encode(), digest_size=4).digest(), "big")


class AppliedIndex:
    """Ledger places (partition, offset) by command-id digest, for every record read from the ledger."""

    def __init__(self, *, staged: int = STAGED, max_run: int = MAX_RUN) -> None:
        self._staged_limit = staged
        self._max_run = max_run
        self._places = array("Q")  # number -> partition << 48 | offset
        self._runs: list[_Run] = []
        self._staged: dict[int, list[int]] = {}  # digest -> numbers, not in a run yet

    def __len__(self) -> int:
        """Records indexed (an id recorded twice, for example again after a tombstone, counts twice)."""
        return len(self._places)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the staged ids, a few thousand at most, not counted)."""
        arrays = [self._places, *(r.words for r in self._runs), *(r.fence for r in self._runs)]
        return sum(a.buffer_info()[1] * a.itemsize for a in arrays)

    @property
    def runs(self) -> list[int]:
        """The sizes of the sorted runs, oldest first."""
        return [len(r.words) for r in self._runs]

    def add(self, partition: int, command_id: str, offset: int) -> None:
        number = len(self._places)
        if number > _SEQ_MASK:
            raise OverflowError("the ledger index holds at most 2**32 records per process")
        if not 0 <= offset <= _OFFSET_MASK or partition < 0:
            raise ValueError(f"not a ledger place: partition {partition}, offset {offset}")
        self._places.append((partition << _OFFSET_BITS) | offset)
        self._staged.setdefault(digest32(command_id), []).append(number)
        if len(self._places) % self._staged_limit == 0:
            self._flush()

    def places(self, command_id: str) -> list[tuple[int, int]]:
        """(partition, offset) of every record whose key may be `command_id`, newest first (confirm each)."""
        digest = digest32(command_id)
        numbers = list(self._staged.get(digest, ()))
        low = digest << _SEQ_BITS
        for run in self._runs:
            words = run.words
            bucket = low >> run.shift
            i = bisect.bisect_left(words, low, run.fence[bucket], run.fence[bucket + 1])
            while i < len(words) and words[i] >> _SEQ_BITS == digest:
                numbers.append(words[i] & _SEQ_MASK)
                i += 1
        numbers.sort(reverse=True)
        places = self._places
        return [(places[n] >> _OFFSET_BITS, places[n] & _OFFSET_MASK) for n in numbers]

    def _flush(self) -> None:
        staged = self._staged
        words = array("Q", sorted((d << _SEQ_BITS) | n for d, numbers in staged.items() for n in numbers))
        self._staged = {}
        runs = self._runs
        runs.append(_Run.of(words))
        while len(runs) >= 2:
            older, newer = runs[-2].words, runs[-1].words
            if len(older) > len(newer) or len(older) + len(newer) > self._max_run:
                break
            # Merged one word at a time: a sorted list of them would hold ~44 bytes a word for a moment, and
            # the freed heap it leaves behind stays in the process's RSS.
            runs[-2:] = [_Run.of(array("Q", heapq.merge(older, newer)))]


class _Run:
    """Sorted words, and the index in them where each prefix of `64 - shift` bits starts."""

    __slots__ = ("fence", "shift", "words")

    def __init__(self, words: array[int], fence: array[int], shift: int) -> None:
        self.words = words
        self.fence = fence
        self.shift = shift

    @classmethod
    def of(cls, words: array[int]) -> _Run:
        bits = min(16, max(0, (len(words) // 4).bit_length() - 1))
        shift = _WORD_BITS - bits
        starts = [bisect.bisect_left(words, b << shift) for b in range(1 << bits)]
        return cls(words, array("I", [*starts, len(words)]), shift)
