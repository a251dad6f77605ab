"""What the benchmarks share: the corpus, the fake upstream, real gunicorn, wrk, and reading the results.

bench/run.py and bench/load.py both serve a corpus of Daily Papers items from
the loopback fake upstream of the tests, start real gunicorn on it as `make run`
does (gunicorn.conf.py, wsgi:app), drive it with wrk, and read what the server
itself reports: its access-log lines (status, bytes, server-side ms, cache
hit or miss) and its workers' resident memory. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import collections
import gzip
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
BIN = Path(sys.executable).parent
DEFAULT_CORPUS = REPO.parent / "shared" / "fixtures" / "daily_papers_corpus.json.gz"
RESULTS = BENCH / "results"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from feedproxy.config import DEFAULT_THREADS  # noqa: E402
from tests.fakeupstream import FakeUpstream  # noqa: E402

# The scenario of issue 7: a window holding the whole corpus.
SERVICE_SETTINGS = {"FEEDPROXY_WINDOW_DAYS": "1000", "FEEDPROXY_MAX_PAGES": "200", "WEB_CONCURRENCY": "2"}


# -- the corpus ----------------------------------------------------------------------


def load_corpus(path: Path) -> tuple[list[dict], str]:
    """Return the API items of the corpus file, or a synthetic corpus of the same shape when it is absent."""
    if path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as file:
            items = json.load(file)
        return items, f"`{path.name}`, {len(items):,} real items"
    from bench.bench_query import synthetic_items

    items = synthetic_items()
    return items, f"synthetic, {len(items):,} items from a fixed seed ({path} not found)"


def valid_paper_count(items: list[dict]) -> int:
    """How many distinct papers feedproxy keeps from these items (what /healthz should report)."""
    return len(valid_paper_ids(items))


def valid_paper_ids(items: list[dict]) -> list[str]:
    """The ids of the distinct papers feedproxy keeps from these items, in the corpus's order."""
    from feedproxy.errors import InvalidItem
    from feedproxy.upstream.papers import paper_from_item

    ids: dict[str, None] = {}
    for item in items:
        try:
            ids.setdefault(paper_from_item(item).id)
        except InvalidItem:
            pass
    return list(ids)


_STOPWORDS = frozenset(
    "about after also among based been being between both does each from have however into more most only "
    "other over such than that their them then there these they this through toward towards under using "
    "very what when where whether which while with within without".split()
)


def title_words(items: list[dict], count: int = 100) -> list[str]:
    """The ``count`` words of real titles that most papers mention (in title or abstract), stop words left out.

    Three of them together still match dozens of papers, so a query made of
    them filters the whole corpus and renders a full page of entries.
    """
    in_titles: set[str] = set()
    held_by: collections.Counter[str] = collections.Counter()
    for item in items:
        paper = item.get("paper", {})
        title = str(paper.get("title") or item.get("title") or "")
        in_titles.update(w.lower() for w in re.findall(r"[A-Za-z]{4,}", title))
        held_by.update({w.lower() for w in re.findall(r"[A-Za-z]{4,}", title + " " + str(paper.get("summary") or ""))})
    ranked = [w for w, _ in held_by.most_common() if w in in_titles and w not in _STOPWORDS]
    return ranked[:count]


def distinct_queries(words: list[str], count: int, seed: int, size: int = 3) -> list[str]:
    """``count`` different queries of ``size`` words each (no two share the same set of words), URL-ready."""
    rng = random.Random(seed)
    seen: set[frozenset[str]] = set()
    queries = []
    while len(queries) < count:
        chosen = rng.sample(words, size)
        if frozenset(chosen) not in seen:
            seen.add(frozenset(chosen))
            queries.append("+".join(chosen))
    return queries


def write_lines(lines: list[str], folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- servers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_upstream(items: list[dict]) -> FakeUpstream:
    """The tests' fake Daily Papers API on a free loopback port, answering If-None-Match with 304."""
    upstream = FakeUpstream(items)
    upstream.etags = True
    return upstream.start()


@dataclass
class Gunicorn:
    """One gunicorn master started for a benchmark, with its output in files."""

    name: str
    proc: subprocess.Popen
    base: str
    stdout_path: Path
    stderr_path: Path
    started: float  # time.monotonic() just before the process was started
    env: dict = field(repr=False)
    started_wall: float = 0.0  # the same moment as time.time(), to compare with the log's timestamps
    first_feed_s: float | None = None  # seconds from start to the first 200 on /feed (wait_until_serving)

    @classmethod
    def start(cls, name: str, folder: Path, settings: dict, app: str = "wsgi:app") -> "Gunicorn":
        """Start `gunicorn -c gunicorn.conf.py APP` as `make run` does, bound to 127.0.0.1 on a free port."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDPROXY_")}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update({"PORT": str(port), **settings})
        stdout_path, stderr_path = folder / f"{name}.access.log", folder / f"{name}.error.log"
        started, started_wall = time.monotonic(), time.time()
        # The command line's -b overrides the config file's 0.0.0.0: the benchmark stays on loopback.
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", app],
                cwd=REPO, env=env, stdout=stdout, stderr=stderr,
            )
        return cls(name, proc, f"http://127.0.0.1:{port}", stdout_path, stderr_path, started, env, started_wall)

    @property
    def threads(self) -> int:
        return int(self.env.get("GUNICORN_THREADS") or DEFAULT_THREADS)

    @property
    def worker_kind(self) -> str:
        """How each worker serves: "1 thread (sync worker)" or "4 threads (gthread worker)"."""
        return f"{self.threads} threads (gthread worker)" if self.threads > 1 else "1 thread (sync worker)"

    def worker_pids(self) -> list[int]:
        """The pids of the master's children (its workers), from /proc."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            return sorted(int(pid) for pid in children.read_text().split())
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def worker_rss_mb(self) -> dict[int, float]:
        """Resident memory of each worker in MB (VmRSS)."""
        return {pid: rss_mb(pid) for pid in self.worker_pids()}

    def worker_memory_detail(self) -> dict[int, dict[str, int]]:
        """Where each worker's memory is, in MB: anonymous and file-backed resident, the peak (VmHWM) and
        the brk heap's resident part. Kept in the JSON results to explain a worker that stands out."""
        detail = {}
        for pid in self.worker_pids():
            fields = {}
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    fields[name] = int(value.split()[0]) // 1024
            heap, in_heap = 0, False
            for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
                if not line[:1].isupper():
                    in_heap = line.endswith("[heap]")
                elif in_heap and line.startswith("Rss:"):
                    heap += int(line.split()[1])
            detail[pid] = {**fields, "heap": heap // 1024}
        return detail

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn {self.name} exited with {self.proc.returncode}:\n{self.errors()[-3000:]}")

    def errors(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def access_offset(self) -> int:
        """Where the access log ends now: pass it to access_lines to read one phase's requests."""
        return self.stdout_path.stat().st_size

    def access_lines(self, since: int = 0) -> list[dict]:
        with self.stdout_path.open("rb") as file:
            file.seek(since)
            lines = file.read().decode(errors="replace").splitlines()
        return [entry for entry in map(parse_access_line, lines) if entry]

    def stop(self) -> None:
        """SIGTERM the master and wait for it (SIGKILL after 30 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rss_mb(pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_ACCESS_FIELD = re.compile(r"\b(status|bytes|ms|cache|path|gzip)=(\S+)")


def parse_access_line(line: str) -> dict | None:
    """Read one of the app's `request method=GET path=/feed status=200 bytes=.. ms=.. cache=..` lines."""
    if " request method=" not in line:
        return None
    entry: dict = dict(_ACCESS_FIELD.findall(line))
    try:
        entry["status"] = int(entry["status"])
        entry["ms"] = float(entry["ms"])
        entry["bytes"] = int(entry.get("bytes", 0))
    except (KeyError, ValueError):
        return None
    q = re.search(r" q='([^']*)'", line)
    entry["q"] = q.group(1) if q else None
    return entry


def get(base: str, path: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, dict, bytes]:
    """One GET with exactly these headers; the body exactly as sent (never decompressed)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def healthz_papers(server: Gunicorn) -> int | None:
    try:
        status, _, body = get(server.base, "/healthz", timeout=5)
        return json.loads(body).get("papers")
    except (OSError, ValueError):
        return None


def wait_until_serving(server: Gunicorn, expected: int, timeout: float = 180, streak: int = 12) -> float:
    """Wait until /healthz reports ``expected`` papers ``streak`` times in a row; return seconds since start.

    /feed is asked too: a worker that lost the race for the refresh lock loads
    its sibling's saved snapshot only when a feed is asked of it. The first 200
    on /feed is kept in ``server.first_feed_s``.
    """
    deadline = time.monotonic() + timeout
    in_a_row = 0
    while time.monotonic() < deadline:
        server.check_running()
        try:
            if get(server.base, "/feed?q=pretraining", timeout=30)[0] == 200 and server.first_feed_s is None:
                server.first_feed_s = time.monotonic() - server.started
        except OSError:
            pass
        in_a_row = in_a_row + 1 if healthz_papers(server) == expected else 0
        if in_a_row >= streak:
            return time.monotonic() - server.started
        time.sleep(0.1 if in_a_row else 0.5)
    raise RuntimeError(f"{server.name}: /healthz did not report {expected} papers within {timeout:g} s "
                       f"(last: {healthz_papers(server)}):\n{server.errors()[-3000:]}")


def serve_corpus(items: list[dict], folder: Path, name: str = "feedproxy",
                 **settings: str) -> tuple[FakeUpstream, Gunicorn]:
    """Start the fake upstream with ``items`` and gunicorn following it, with a fresh data folder."""
    upstream = start_upstream(items)
    data_dir = folder / f"{name}-data"
    data_dir.mkdir()
    server = Gunicorn.start(name, folder, {**SERVICE_SETTINGS, "FEEDPROXY_UPSTREAM_URL": upstream.url,
                                           "FEEDPROXY_DATA_DIR": str(data_dir), **settings})
    return upstream, server


class LogCounter:
    """Count the access-log lines holding ``needle`` as the server writes them (a stop condition for wrk)."""

    def __init__(self, path: Path, since: int, needle: bytes):
        self._file = path.open("rb")
        self._file.seek(since)
        self._needle = needle
        self._partial = b""
        self.count = 0
        self.changed_at = time.monotonic()

    def update(self) -> int:
        chunk = self._partial + self._file.read()
        complete, _, self._partial = chunk.rpartition(b"\n")
        found = complete.count(self._needle)
        if found:
            self.count += found
            self.changed_at = time.monotonic()
        return self.count

    def idle_for(self) -> float:
        return time.monotonic() - self.changed_at

    def close(self) -> None:
        self._file.close()


# -- wrk -----------------------------------------------------------------------------


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit("bench: wrk is not installed (Debian: apt-get install wrk; `make bench` does it)")
    return path


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return out.split("[")[0].replace("wrk ", "").strip() or "?"


def run_wrk(url: str, seconds: float, *, script: str = "report.lua", args: tuple = (), headers: dict | None = None,
            threads: int = 2, connections: int = 16, stop_when=None) -> dict:
    """Run wrk against ``url`` and return its summary (requests, req_per_s, latency_us percentiles, errors).

    ``stop_when``, if given, is polled every 0.2 s; when it returns true wrk is
    interrupted (SIGINT makes it report as at its normal end).
    """
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", str(BENCH / "wrk" / script)]
    for key, value in (headers or {}).items():
        command += ["-H", f"{key}: {value}"]
    command += [url, "--", *map(str, args)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stop_when is not None:
        while proc.poll() is None:
            if stop_when():
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.2)
    out, err = proc.communicate()
    line = next((l for l in out.splitlines() if l.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {' '.join(command)}\n{out}\n{err}")
    summary = json.loads(line[len("WRK_JSON "):])
    summary["req_per_s"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["socket_errors"] = sum(v for k, v in summary["errors"].items() if k != "status")
    summary["command"] = " ".join(command)
    return summary


# -- profiles ------------------------------------------------------------------------


def py_spy() -> str | None:
    """The py-spy command, if installed (pip install py-spy); profiling is skipped without it."""
    found = shutil.which("py-spy") or (str(BIN / "py-spy") if (BIN / "py-spy").exists() else None)
    return found


def record_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """Start sampling one worker with py-spy for ``seconds``, as collapsed stacks in ``out``.

    Only the thread holding the GIL is sampled (--gil), so threads waiting for
    work or for the socket do not crowd the profile: it shows where CPU goes.
    """
    return subprocess.Popen(
        [py_spy(), "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", "250",
         "--gil", "--format", "raw", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


_FRAME = re.compile(r"^(?P<name>.+?) \((?P<file>.+?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """`render_atom (/x/.venv/lib/python3.11/site-packages/feedgen/feed.py:123)` -> `render_atom (feedgen/feed.py)`."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    return f"{match['name']} ({path})"


def summarize_profile(path: Path, top: int = 25) -> dict:
    """Read py-spy's collapsed stacks: samples, and the functions with the most samples, inclusive and self."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        if frames and (frames[0].startswith("process ") or frames[0].startswith("thread ")):
            frames = frames[1:]
        total += samples
        if frames:
            own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
    return {
        "samples": total,
        "inclusive": [(name, n / total) for name, n in inclusive.most_common(top)] if total else [],
        "self": [(name, n / total) for name, n in own.most_common(top)] if total else [],
    }


def profile_text(summary: dict) -> str:
    lines = [f"{summary['samples']} samples of one worker's GIL holder", "", "inclusive  function"]
    lines += [f"{share:8.1%}  {name}" for name, share in summary["inclusive"]]
    lines += ["", "self       function"]
    lines += [f"{share:8.1%}  {name}" for name, share in summary["self"]]
    return "\n".join(lines)


# -- numbers and reports -------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (p from 0 to 100) of the values; nan when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[int(rank) - 1]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def cpu_busy(seconds: float = 3) -> float:
    """The fraction of all cores' time spent busy over the next ``seconds`` (/proc/stat)."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    busy_before, total_before = sample()
    time.sleep(seconds)
    busy_after, total_after = sample()
    return (busy_after - busy_before) / max(1, total_after - total_before)


def wait_for_quiet(timeout: float, limit: float = 0.15, sample: float = 3) -> float:
    """Wait (up to ``timeout`` s) until the CPUs are less than ``limit`` busy; return the last reading.

    Call it while the benchmark's own servers are idle: then what it sees is
    other processes. The load average lags by a minute, so this reads /proc/stat.
    """
    deadline = time.monotonic() + timeout
    busy = cpu_busy(sample)
    while busy >= limit and time.monotonic() < deadline:
        busy = cpu_busy(sample)
    return busy


def environment() -> dict:
    """The facts needed to compare one run with another."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    from importlib.metadata import version

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "flask": version("flask"),
        "wrk": wrk_version(),
        "code": code_version(),
        "load_average_at_start": load_average(),
    }


def code_version() -> str:
    """The commit measured, and whether the app had uncommitted changes (git that takes no lock)."""
    def git(*args: str) -> str:
        try:
            command = ["git", "--no-optional-locks", *args]
            return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "?"
    changed = git("status", "--porcelain", "--", "feedproxy", "wsgi.py", "gunicorn.conf.py")
    return commit + (" with uncommitted changes to the app" if changed else "")


def publish(name: str, report: str, results: dict, json_path: Path | None, readme: bool) -> None:
    """Print a benchmark's report and keep it: bench/results/NAME.md and .json, and README when asked."""
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(report + "\n", encoding="utf-8")
    (json_path or RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if readme:
        replace_readme_block(name, report)
        print(f"{name}: README.md's Benchmarks section updated", file=sys.stderr)


def replace_readme_block(name: str, markdown: str) -> None:
    """Put ``markdown`` between README's `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`.

    Only text inside the `## Benchmarks` section is touched, and the file is
    read right before it is written (others edit the rest of README). Missing
    markers are added at the end of the section.
    """
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    heading = "\n## Benchmarks\n"
    start = text.index(heading) + len(heading)
    following = text.find("\n## ", start)
    end = len(text) if following == -1 else following + 1
    section = text[start:end]
    begin, finish = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{finish}"
    if begin in section and finish in section.split(begin, 1)[1]:
        before, rest = section.split(begin, 1)
        section = before + block + rest.split(finish, 1)[1]
    else:
        section = section.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text[:start] + section + text[end:], encoding="utf-8")


def tidy_workdir(folder: Path) -> None:
    """Drop the data folders (snapshots, saved indexes) and gzip the access logs: keep what explains a run."""
    for data in folder.glob("*-data"):
        shutil.rmtree(data, ignore_errors=True)
    for log in folder.glob("*.access.log"):
        with log.open("rb") as raw, gzip.open(f"{log}.gz", "wb") as packed:
            shutil.copyfileobj(raw, packed)
        log.unlink()


def new_workdir(prefix: str) -> Path:
    """A fresh folder for one run's logs, data and word lists."""
    return Path(tempfile.mkdtemp(prefix=prefix))
