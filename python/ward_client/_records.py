"""A framework's state kept in ward's ledger as a log of records, one ward checkpoint each."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ._errors import ConnectionDroppedError, InternalError, ServerTimeoutError
from ._sync import Ward

#: The member naming what kind of record a ward checkpoint is, and so which integration reads it.
KIND = "ward.record"


class RecordLog:
    """The state of an integration (`WardSaver`, `WardSession`) as records in ward's ledger.

    Each change is one record, made durable in ward (`checkpoint.save`, labelled with the
    kind) before it is applied to the in-memory state that answers reads. Made inside a run
    that already has records (an agent restarted after a crash), it reads its own kind back
    in order first. Records of other kinds, and the agent's own checkpoints, are skipped.
    """

    kind: str = ""

    def __init__(self, ward: Ward | None) -> None:
        self.ward = ward if ward is not None else Ward()
        # Records reach ward in the order they are applied: one writer at a time. Readers
        # take only `_data`, so a read never waits for ward's disk.
        self._order = threading.Lock()
        self._data = threading.RLock()
        #: Records applied so far, read back or made here.
        self.records = 0
        # Set when a record's fate is unknown (no answer, or the connection dropped after it
        # was sent): ward may hold it or not, so nothing more is recorded on top of a state
        # that may differ from the ledger's. A new object reads the ledger's back.
        self._unknown: str | None = None

    def _replay(self) -> None:
        latest = self.ward.load()
        if latest is None:
            return
        last = int(latest["seq"])
        for seq in range(1, last + 1):
            loaded = latest if seq == last else self.ward.load(seq)
            if loaded is None or int(loaded["seq"]) != seq:
                raise InternalError(f"checkpoint {seq} of this run is damaged: the {self.kind} state cannot be read back past it"
                                    " (ward checkpoint show names the damage)")
            state = loaded.get("state")
            if isinstance(state, dict) and state.get(KIND) == self.kind and self._owns(state):
                self._apply_checked(state, seq)

    def _owns(self, record: Mapping[str, Any]) -> bool:
        """Whether a record of this kind is this object's (a session reads only its own)."""
        return True

    def _record(self, record: dict[str, Any]) -> None:
        with self._order:
            self._commit(record)

    def _commit(self, record: dict[str, Any], live: Any = None) -> None:
        """Makes `record` durable in ward, then applies it (`_order` held). `live`: what the
        caller already has of the applied state, handed to `_apply` to save recomputing it."""
        record[KIND] = self.kind
        if self._unknown is not None:
            raise InternalError(f"an earlier {self.kind} record may or may not be in the ledger ({self._unknown}): nothing more is"
                                " recorded on top of it; make a new one, which reads the ledger back")
        try:
            self.ward.checkpoint(record, self.kind)
        except (ServerTimeoutError, ConnectionDroppedError) as e:
            self._unknown = e.message
            raise
        with self._data:
            self._apply_checked(record, 0, live)

    def _apply_checked(self, record: Mapping[str, Any], seq: int, live: Any = None) -> None:
        try:
            self._apply(record, seq, live)
        except (KeyError, TypeError, ValueError) as e:
            raise InternalError(f"checkpoint {seq} holds a malformed {self.kind} record: {e!r}") from None
        self.records += 1

    def _apply(self, record: Mapping[str, Any], seq: int, live: Any = None) -> None:
        raise NotImplementedError
