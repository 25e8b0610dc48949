"""The web app's job queue: one edit job runs at a time on a worker thread, the rest wait in order.

Jobs live in the server process, not in a browser session, so a page reload finds them again. Each
job writes only into OUT_DIR/<job id>/ (video + JSON record per prompt, atomically); a job that fails
leaves its finished outputs and nothing half-written. Progress per phase is read from the editor's
own tqdm bars (desc -> phase), so the engine needs no UI hooks.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .engine import EditOptions

# tqdm desc prefix -> phase shown in the page, in pipeline order
PHASES = [("track faces", "track faces"), ("crop faces", "crop faces"), ("invert", "invert"), ("edit", "edit"),
          ("decode + paste back", "decode + paste back"), ("encode", "encode")]


def phase_of(desc: str) -> str | None:
    d = (desc or "").strip().rstrip(":").lower()
    return next((name for prefix, name in PHASES if d.startswith(prefix)), None)


def live_bars() -> list[tuple[str, float, float]]:
    """(desc, n, total) of every live tqdm bar in the process."""
    import tqdm
    import tqdm.asyncio

    bars = []
    for cls in {tqdm.std.tqdm, tqdm.asyncio.tqdm_asyncio}:
        for b in list(cls.__dict__.get("_instances", ())):
            if getattr(b, "total", None):
                bars.append((str(b.desc), float(b.n), float(b.total)))
    return bars


@dataclass
class Job:
    id: int
    source: Path  # the job's private copy of the input video
    name: str  # the input's file name as the user gave it
    prompts: list[str]
    options: EditOptions
    out_dir: Path
    state: str = "queued"  # queued | running | done | failed
    message: str = ""
    prompt_index: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    submitted: float = field(default_factory=time.time)
    finished: float | None = None


class JobQueue:
    def __init__(self, out_dir: str | Path, work_dir: str | Path, runner: Callable | None = None):
        from .engine import edit_video

        self.out_dir, self.work_dir = Path(out_dir), Path(work_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.runner = runner or edit_video
        self.jobs: list[Job] = []
        self.busy = threading.Lock()  # held while the engine runs (a job or a preview)
        self._cv = threading.Condition()
        self._ids = itertools.count(1)
        threading.Thread(target=self._work, name="ipfacediff-jobs", daemon=True).start()

    # ------------------------------------------------------------------ submit / read
    def submit(self, video: str | Path, name: str, prompts: list[str], options: EditOptions) -> tuple[Job, str]:
        """Queue an edit of `video` with each prompt; (job, message for the page)."""
        from .engine import check_video

        prompts = [p.strip() for p in prompts if p.strip()]
        if not prompts:
            raise InputError(None, "no prompt: write at least one (one per line)")
        check_video(video)
        with self._cv:
            job_id = next(self._ids)
            private = self.work_dir / f"job{job_id:04d}{Path(name).suffix.lower() or '.mp4'}"
            shutil.copyfile(video, private)
            job = Job(job_id, private, Path(name).name, prompts, options, self.out_dir / f"job{job_id:04d}")
            ahead = [j for j in self.jobs if j.state in ("queued", "running")]
            self.jobs.append(job)
            self._cv.notify_all()
        if ahead:
            return job, (f"Job {job.id} queued: job {ahead[0].id} is running"
                         + (f" and {len(ahead) - 1} more wait" if len(ahead) > 1 else "") + "; it starts when they finish.")
        return job, f"Job {job.id} started ({len(prompts)} prompt{'s' * (len(prompts) > 1)})."

    def running(self) -> Job | None:
        return next((j for j in self.jobs if j.state == "running"), None)

    def snapshot(self) -> list[Job]:
        return list(self.jobs)

    def _update_phases(self, job: Job) -> None:
        names = [name for _, name in PHASES]
        for desc, n, total in live_bars():
            phase = phase_of(desc)
            if phase:
                job.phases[phase] = max(job.phases.get(phase, 0.0), min(1.0, n / total))
                for earlier in names[: names.index(phase)]:  # the phases run in this order
                    job.phases[earlier] = 1.0

    def _watch(self, job: Job) -> None:
        """Sample the bars 5 times a second while `job` runs (short phases would fall between page polls)."""
        while job.state == "running":
            self._update_phases(job)
            time.sleep(0.2)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._cv:
                while not any(j.state == "queued" for j in self.jobs):
                    self._cv.wait()
                job = next(j for j in self.jobs if j.state == "queued")
            with self.busy:
                job.state = "running"
                threading.Thread(target=self._watch, args=(job,), daemon=True).start()
                self._run(job)

    def _run(self, job: Job) -> None:
        from ..layout import record_path
        from .batch import slug

        try:
            for i, prompt in enumerate(job.prompts):
                job.prompt_index, job.phases = i, {}
                out = job.out_dir / f"{Path(job.name).stem}-job{job.id}-{i + 1:02d}-{slug(prompt)}.mp4"
                job.options.extra = {"app": {"job": job.id, "input_name": job.name, "prompt_index": i}}
                self.runner(job.source, out, prompt, job.options)
                job.phases = {name: 1.0 for _, name in PHASES}
                job.outputs += [out, record_path(out)]
            job.state, job.message = "done", f"{len(job.prompts)} edit(s) written"
        except InputError as e:
            job.state, job.message = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - the server must outlive a failed job
            traceback.print_exc()
            job.state, job.message = "failed", f"{type(e).__name__}: {e}"
        finally:
            job.finished = time.time()
            job.source.unlink(missing_ok=True)
            if job.out_dir.is_dir() and not any(job.out_dir.iterdir()):
                job.out_dir.rmdir()
