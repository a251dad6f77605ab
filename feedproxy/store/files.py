"""Saving and loading the snapshot on disk, and the lock that lets one worker refresh at a time.

The file is written atomically (a temporary file in the same folder, fsync,
then rename), so a reader or a crash never sees half a snapshot. A file that
cannot be read back is moved aside, never fatal. Several gunicorn workers (and
several instances on one host) share the folder: the one holding the refresh
lock fetches from the upstream, the others load what it saved.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Iterator
from contextlib import contextmanager

from feedproxy.errors import InvalidValue, StorageError
from feedproxy.store.policy import FailureRun
from feedproxy.upstream.http import NO_VALIDATORS, Validators
from feedproxy.upstream.papers import Paper, parse_timestamp

log = logging.getLogger(__name__)

FILE_FORMAT = 1
SNAPSHOT_NAME = "snapshot.json.gz"
FAILURE_NAME = "failure.json"
CHECKED_NAME = "checked.json"
LOCK_NAME = "refresh.lock"
SERVED_NAME = "served.json"
SERVED_LOCK_NAME = "served.lock"
# save() writes these two keys first: the source can be read without parsing the papers.
_SOURCE_AT_START = re.compile(rb'\{"format": \d+, "source": ("(?:[^"\\]|\\.)*")')


def code_fingerprint() -> str:
    """A hash of the code whose classes an index pickle holds: a code change invalidates old pickles.
    So does another wordllama version, whose model made the pickle's concept vectors.

    The files are read, not imported: the search stage comes after this one.
    """
    digest = hashlib.sha256()
    package = Path(__file__).parent.parent
    for path in (*sorted((package / "search").glob("*.py")), package / "upstream" / "papers.py", Path(__file__)):
        digest.update(path.read_bytes())
    try:
        digest.update(f"wordllama={metadata.version('wordllama')}".encode())
    except metadata.PackageNotFoundError:
        pass
    return digest.hexdigest()[:16]


CODE_FINGERPRINT = code_fingerprint()


def output_fingerprint() -> str:
    """A hash of everything that shapes what is served: the whole package (code, templates, static files)
    and the libraries that write the XML. An upgrade that changes it may change a feed's bytes for the
    same data, so it moves Last-Modified (see served_change_time)."""
    digest = hashlib.sha256()
    package = Path(__file__).parent.parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    for library in ("feedgen", "lxml"):
        try:
            digest.update(f"{library}={metadata.version(library)}".encode())
        except metadata.PackageNotFoundError:
            pass
    return digest.hexdigest()[:16]


OUTPUT_FINGERPRINT = output_fingerprint()


def served_change_time(changed_at: datetime, code: str | None, since: datetime) -> datetime:
    """The Last-Modified this code gives saved data that changed at ``changed_at``, as recorded by ``code``
    (None: unknown), when this code first served from the folder at ``since`` (SnapshotFile.first_served).

    Data recorded by other code was served as other bytes: it is new to this code, later than both.
    Never earlier than ``since``: code rolled back to an older version serves other bytes than the
    version it replaced, whatever that version recorded. Every process of one code works this out alike.
    """
    if code != OUTPUT_FINGERPRINT:
        changed_at = changed_at.replace(microsecond=0) + timedelta(seconds=1)
    return max(changed_at, since)
# What an index cache may hold: loading it through _IndexUnpickler refuses any other class or function,
# so a planted file cannot make the service run code (pickle.load would call whatever it names).
INDEX_GLOBALS = frozenset({
    ("feedproxy.store.files", "SavedIndex"),
    ("feedproxy.search.index", "PaperIndex"),
    ("feedproxy.search.index", "_FieldPostings"),
    ("feedproxy.search.index", "_Levels"),
    ("feedproxy.search.concepts", "ConceptIndex"),
    ("feedproxy.upstream.papers", "Paper"),
    ("feedproxy.upstream.http", "Validators"),
    ("datetime", "datetime"), ("datetime", "timezone"), ("datetime", "timedelta"),
    ("array", "array"), ("array", "_array_reconstructor"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
})


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in INDEX_GLOBALS:
            raise StorageError(f"{module}.{name} is not allowed in an index cache")
        return super().find_class(module, name)


# The index cache's file is named by the code that wrote it: whether a usable one exists is then a
# stat, not an unpickling (the refresher child decides on it before loading anything).
INDEX_NAME = f"index-{CODE_FINGERPRINT}.pickle"


@dataclass(frozen=True)
class SavedIndex:
    """The search index of a saved snapshot, kept beside it so a restart need not rebuild it.

    Only a cache: the JSON snapshot is the record. It is trusted only when written
    by this code (fingerprint) for the same source, window and snapshot version.
    """

    source: str
    window_days: int
    fetched_at: datetime
    version: str
    index: object  # whatever the store's index builder made (a search.index.PaperIndex)
    validators: Validators = NO_VALIDATORS
    changed_at: datetime | None = None  # when this version was first seen (None: fetched_at)
    code: str = CODE_FINGERPRINT
    # The OUTPUT_FINGERPRINT of the code that recorded changed_at (None: from before it was kept).
    output_code: str | None = None


@dataclass(frozen=True)
class SavedSnapshot:
    """What a snapshot file holds."""

    source: str
    fetched_at: datetime
    papers: tuple[Paper, ...]
    # ETag/Last-Modified of the upstream answer this data came from, so whichever
    # worker refreshes next can ask conditionally.
    validators: Validators = NO_VALIDATORS
    # When this content was first seen (feeds' Last-Modified); files from before it was kept: fetched_at.
    changed_at: datetime | None = None
    # The OUTPUT_FINGERPRINT of the code that saved it (None: files from before it was kept).
    code: str | None = None

    def __post_init__(self) -> None:
        if self.changed_at is None:
            object.__setattr__(self, "changed_at", self.fetched_at)


def _paper_to_json(paper: Paper) -> dict:
    data = asdict(paper)
    data["published"] = paper.published.isoformat()
    data["arxiv_published"] = paper.arxiv_published.isoformat() if paper.arxiv_published else None
    return data


def _paper_from_json(data: dict) -> Paper:
    data = dict(data)
    data["published"] = parse_timestamp(data["published"])
    data["arxiv_published"] = parse_timestamp(data.get("arxiv_published"))
    if data["published"] is None:
        raise InvalidValue(f"paper {data.get('id')!r} has no valid published date")
    for name in ("authors", "ai_keywords", "author_users"):
        data[name] = tuple(data.get(name) or ())
    return Paper(**data)


class SnapshotFile:
    """One snapshot file in a data folder, with its refresh lock beside it."""

    def __init__(self, data_dir: Path | str):
        self.dir = Path(data_dir)
        self.path = self.dir / SNAPSHOT_NAME
        self.lock_path = self.dir / LOCK_NAME

    def ensure_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"storage: cannot create data folder {self.dir}: {exc.strerror}") from None

    def mtime(self) -> float | None:
        """The file's modification time, or None when there is no file."""
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def save(self, saved: SavedSnapshot) -> None:
        """Write the snapshot atomically: temporary file, fsync, rename."""
        self.ensure_dir()
        document = {
            "format": FILE_FORMAT,
            "source": saved.source,
            "fetched_at": saved.fetched_at.isoformat(),
            "changed_at": saved.changed_at.isoformat(),
            "code": OUTPUT_FINGERPRINT,  # changed_at is this code's: other code serves other bytes
            "papers": [_paper_to_json(p) for p in saved.papers],
            "validators": saved.validators.to_json(),
        }
        body = gzip.compress(json.dumps(document, ensure_ascii=False).encode("utf-8"), compresslevel=5, mtime=0)
        self._write_atomically(self.path, body)

    def _write_atomically(self, path: Path, body: bytes) -> None:
        """Write ``body`` to ``path`` through a temporary file, fsync and rename."""
        self.ensure_dir()
        try:
            fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".tmp", dir=self.dir)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(body)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                with _ignored(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StorageError(f"storage: cannot save {path}: {exc.strerror or exc}") from None

    def saved_source(self) -> str | None:
        """The upstream the saved snapshot is from, read from its first bytes; None without a readable file."""
        try:
            with gzip.open(self.path, "rb") as handle:
                head = handle.read(8192)
        except (OSError, EOFError, zlib.error):  # a corrupt file: the refresh moves it aside
            return None
        match = _SOURCE_AT_START.match(head)
        try:
            return json.loads(match.group(1)) if match else None
        except ValueError:
            return None

    def load(self) -> SavedSnapshot | None:
        """Read the saved snapshot; None when there is none. A corrupt file is moved aside."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"storage: cannot read {self.path}: {exc.strerror}") from None
        try:
            document = json.loads(gzip.decompress(raw))
            if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
                raise InvalidValue(f"not a feedproxy snapshot of format {FILE_FORMAT}")
            fetched_at = parse_timestamp(document.get("fetched_at"))
            if fetched_at is None:
                raise InvalidValue("no valid fetched_at")
            papers = tuple(_paper_from_json(p) for p in document["papers"])
            code = document.get("code")
            return SavedSnapshot(str(document.get("source", "")), fetched_at, papers,
                                 Validators.from_json(document.get("validators")),
                                 parse_timestamp(document.get("changed_at")), code if isinstance(code, str) else None)
        except (OSError, EOFError, zlib.error, ValueError, TypeError, KeyError, ArithmeticError, RecursionError) as exc:
            aside = self.move_aside()
            raise StorageError(
                f"storage: {self.path} is unreadable ({type(exc).__name__}: {str(exc)[:200]}); "
                f"moved it to {aside} and will fetch anew"
            ) from None

    @property
    def index_path(self) -> Path:
        return self.dir / INDEX_NAME

    def save_index(self, saved: SavedIndex) -> None:
        """Write the index cache atomically (written by this process from its own data only); drop older code's."""
        saved = replace(saved, output_code=OUTPUT_FINGERPRINT)
        self._write_atomically(self.index_path, pickle.dumps(saved, protocol=pickle.HIGHEST_PROTOCOL))
        for stale in self.dir.glob("index*.pickle"):
            if stale != self.index_path:
                with _ignored(OSError):
                    stale.unlink()

    def has_current_index(self) -> bool:
        """Whether an index cache of this code, at least as new as the snapshot file, is there to load."""
        try:
            return self.index_path.stat().st_mtime >= (self.mtime() or float("inf"))
        except OSError:
            return False

    def load_index(self) -> SavedIndex | None:
        """Read the index cache if it is at least as new as the snapshot file and from this code; else None.

        A cache that cannot be read is simply rebuilt: it holds nothing the JSON file lacks.
        """
        path = self.index_path
        try:
            if path.stat().st_mtime < (self.mtime() or float("inf")):
                return None
            with path.open("rb") as handle:
                saved = _IndexUnpickler(handle).load()
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any unreadable cache means: rebuild it
            log.warning("storage: ignoring unreadable index cache %s (%s: %s)", path, type(exc).__name__,
                        str(exc)[:200])
            return None
        if not isinstance(saved, SavedIndex) or saved.code != CODE_FINGERPRINT:
            return None
        return saved

    def first_served(self, now: datetime) -> datetime:
        """When this code (OUTPUT_FINGERPRINT) began serving from this folder: recorded by its first process.

        Every process of one code gets the same time, across workers and restarts; code unlike the
        last recorded (an upgrade, or a rollback) records ``now``, always later than the last record.
        """
        self.ensure_dir()
        try:
            with open(self.dir / SERVED_LOCK_NAME, "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # held for one small read and write
                code, since = self._load_served()
                if code == OUTPUT_FINGERPRINT and since is not None:
                    return since
                moment = now.replace(microsecond=0)
                if since is not None and moment <= since:
                    moment = since.replace(microsecond=0) + timedelta(seconds=1)
                body = json.dumps({"code": OUTPUT_FINGERPRINT, "since": moment.isoformat()}).encode()
                self._write_atomically(self.dir / SERVED_NAME, body)
                return moment
        except OSError as exc:
            raise StorageError(f"storage: cannot record the code serving {self.dir}: {exc.strerror}") from None

    def _load_served(self) -> tuple[str | None, datetime | None]:
        try:
            data = json.loads((self.dir / SERVED_NAME).read_bytes())
            return str(data["code"]), parse_timestamp(data["since"])
        except (OSError, ValueError, TypeError, KeyError):
            return None, None

    def save_failure(self, state: FailureRun | None) -> None:
        """Record the run of failures (None: the upstream answered again, forget it)."""
        path = self.dir / FAILURE_NAME
        if state is None:
            with _ignored(FileNotFoundError):
                path.unlink()
            return
        body = json.dumps({"failures": state.failures, "next_attempt": state.next_attempt.isoformat(),
                           "last_error": state.last_error, "last_error_at": state.last_error_at.isoformat()})
        self._write_atomically(path, body.encode("utf-8"))

    def save_checked(self, when: datetime, source: str) -> None:
        """Record when ``source`` last answered well, even if nothing changed (a 304)."""
        body = json.dumps({"checked_at": when.isoformat(), "source": source}).encode()
        self._write_atomically(self.dir / CHECKED_NAME, body)

    def load_checked(self, source: str) -> datetime | None:
        """When any worker last refreshed ``source`` successfully, or None (never, or another source)."""
        try:
            data = json.loads((self.dir / CHECKED_NAME).read_bytes())
            return parse_timestamp(data.get("checked_at")) if data.get("source") == source else None
        except (OSError, ValueError, AttributeError):
            return None

    def load_failure(self) -> FailureRun | None:
        """The recorded run of failures, or None (none, or unreadable: then each worker backs off alone)."""
        try:
            data = json.loads((self.dir / FAILURE_NAME).read_bytes())
            state = FailureRun(int(data["failures"]), parse_timestamp(data["next_attempt"]),
                                 str(data["last_error"]), parse_timestamp(data["last_error_at"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return state if state.next_attempt and state.last_error_at else None

    def move_aside(self) -> Path | None:
        aside = self.path.with_name(f"{SNAPSHOT_NAME}.corrupt")
        try:
            os.replace(self.path, aside)
            return aside
        except OSError:
            return None

    @contextmanager
    def refresh_lock(self, wait: float = 0) -> Iterator[bool]:
        """Try to take the folder's refresh lock, waiting up to ``wait`` seconds; yield whether we hold it."""
        self.ensure_dir()
        try:
            handle = open(self.lock_path, "a+")
        except OSError as exc:
            raise StorageError(f"storage: cannot open {self.lock_path}: {exc.strerror}") from None
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()


@contextmanager
def _ignored(*errors):
    try:
        yield
    except errors:
        pass
