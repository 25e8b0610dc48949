"""One typed settings tree: a dataclass per params.yaml section under the root `Settings`.

conf/ (Hydra) holds the values and params.yaml is their composition (what DVC reads); the defaults
here equal conf/config.yaml (tests/test_settings.py fails if they disagree), so code that builds a
section without a params file behaves like the `sample` profile's shared values.

`load_settings(path)` reads params.yaml once and validates everything: an unknown key, a value of the
wrong type or out of range is an InputError naming the file and the key. Library code takes the typed
sections, never the raw dict.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

from .errors import InputError
from .registry import METHODS, get_method, method_names

T = TypeVar("T")
DEVICES = ("cpu", "cuda", "auto", "mps")
DTYPES = ("float32", "float16", "bfloat16")
RUNTIME = {"runtime": True}  # field metadata: changes speed/memory, never the output


def cli(help: str, invert: bool = False) -> dict[str, Any]:
    """Field metadata: `ipfacediff edit` (and `invert` too if `invert`) takes this setting as a
    `--field-name` option, its type, default and help from the field (cli/settings_args.py)."""
    return {"cli": help, "cli_invert": invert}


# ------------------------------------------------------------------------------------- sections
@dataclass
class WandbSettings:
    mode: str = "offline"  # offline | online | disabled
    project: str = "ipfacediff"

    def validate(self) -> list[str]:
        return [] if self.mode in ("offline", "online", "disabled") else [f"mode {self.mode!r} (expected offline, online or disabled)"]


@dataclass
class DataSettings:
    """params `data`: media sources and face crops (conf/config.yaml + conf/profile/*.yaml)."""

    crop_size: int = 64
    face_index: int = field(default=0, metadata=cli("which face: 0 = largest where tracking starts, 1 = next...", invert=True))
    min_face_px: float = 24
    smooth_sigma: float = 2.0
    crop_scale: float = 1.0
    face_every: int = 5
    source: str = "sample"  # sample | user
    videos: list[str] = field(default_factory=list)  # sample: clip ids; user: CelebV-HQ ids ([] = eval list)
    max_seconds: float | None = None
    fps: Any = None  # int or "num/den"; None keeps the source rate
    clips: dict[str, dict[str, float]] = field(default_factory=dict)  # sample: id -> {start_s, seconds}
    stills: list[str] = field(default_factory=list)
    celeba_hq: str | None = None
    celebv_hq: str | None = None
    celebv_eval_list: str | None = None
    n_train_faces: int = 0  # 0 = all
    n_eval_videos: int = 50

    def __post_init__(self):
        if self.source not in ("sample", "user"):
            raise InputError("params.yaml", f"data.source must be 'sample' or 'user', got {self.source!r}")
        if self.face_every < 1 or self.crop_size < 8:
            raise InputError("params.yaml", "data.face_every must be >= 1 and data.crop_size >= 8")

    def validate(self) -> list[str]:
        return [] if self.face_index >= 0 else ["face_index must be >= 0"]


@dataclass
class ModelsSettings:
    """params `models`: the diffusion model and the directional-loss CLIP."""

    source: str = "tiny"  # tiny | local | true_size
    pretrained: str = "stabilityai/stable-diffusion-2-1-base"  # folder or HF repo id (HF cache, offline)
    clip: str | None = None  # folder or repo id; None -> tiny random CLIP
    dtype: str = "float32"  # compute dtype (saved weights stay as built/downloaded)

    def validate(self) -> list[str]:
        bad = [] if self.source in ("tiny", "local", "true_size") else [f"source {self.source!r} (expected tiny, local or true_size)"]
        return bad + ([] if self.dtype in DTYPES else [f"dtype {self.dtype!r} (expected {', '.join(DTYPES)})"])


@dataclass
class CaptionSettings:
    """params `caption`."""

    captioner: str = "fallback"  # blip2 | fallback
    blip2: str = "Salesforce/blip2-opt-2.7b"  # local folder or HF id (cache only, never downloaded)
    batch_size: int = 16
    max_new_tokens: int = 30

    def validate(self) -> list[str]:
        bad = [] if self.captioner in ("blip2", "fallback") else [f"captioner {self.captioner!r} (expected blip2 or fallback)"]
        return bad + [f"{k} must be >= 1" for k in ("batch_size", "max_new_tokens") if getattr(self, k) < 1]


@dataclass
class TrainerSettings:
    """Keys shared by `finetune_id` and `finetune_dir` (conf/trainer/shared.yaml, composed into both)."""

    enabled: bool = True
    mode: str = "lora"  # lora | full
    lora_rank: int = 4
    lora_alpha: float | None = None  # None -> rank (scale 1)
    steps: int = 4  # optimizer steps
    batch_size: int = 2  # faces per micro-batch, over all processes
    grad_accum: int = 1
    lr: float = 1.0e-4
    lr_scheduler: str = "constant"  # any diffusers.optimization.get_scheduler name
    lr_warmup_steps: int = 0
    optimizer: str = "adamw"  # adamw | adamw8bit (bitsandbytes, CUDA only)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1.0e-2
    adam_epsilon: float = 1.0e-8
    max_grad_norm: float = 1.0  # 0 disables clipping
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    checkpoint_every: int = 2
    keep_checkpoints: int = 2
    ema: bool = False
    ema_decay: float = 0.9999
    timestep_min: int = 0
    timestep_max: int = 1000  # exclusive
    num_workers: int = 0
    seed: int | None = None  # None -> the global `seed`

    def validate(self) -> list[str]:
        bad = []
        if self.mode not in ("lora", "full"):
            bad.append(f"mode {self.mode!r} (expected lora or full)")
        if self.optimizer not in ("adamw", "adamw8bit"):
            bad.append(f"optimizer {self.optimizer!r} (expected adamw or adamw8bit)")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            bad.append(f"mixed_precision {self.mixed_precision!r} (expected no, fp16 or bf16)")
        for key in ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints", "lora_rank"):
            if int(getattr(self, key)) < 1:
                bad.append(f"{key} must be >= 1")
        if not 0 <= self.timestep_min < self.timestep_max:
            bad.append(f"timestep range [{self.timestep_min}, {self.timestep_max}) is empty")
        return bad

    def check(self, section: str) -> None:
        bad = self.validate()
        if bad:
            raise InputError("params.yaml", f"section '{section}': " + "; ".join(bad))


@dataclass
class IdentityTrainSettings(TrainerSettings):
    """params `finetune_id` (eq. 5)."""

    lambda_id: float = 1.0  # recon + lambda_id * (1 - cos(R(x_hat), R(x)))
    recognizer: str = "sface"  # sface (packaged) | arcface (IResNet weights at recognizer_weights)
    recognizer_weights: str | None = None
    prompt: str = "caption"  # UNet text condition: caption | empty

    def validate(self) -> list[str]:
        bad = super().validate()
        return bad + ([] if self.prompt in ("caption", "empty") else [f"prompt {self.prompt!r} (expected caption or empty)"])


@dataclass
class DirectionalTrainSettings(TrainerSettings):
    """params `finetune_dir` (eq. 6)."""

    lambda1: float = 0.3  # preservation: pixel reconstruction of the edited x0-prediction
    lambda2: float = 0.7  # edit: directional CLIP loss
    prompts: list[str] | str = "all"  # ids in data/prompts/edits.yaml, or "all"
    reference: str = "caption"  # reference text: caption | prompt
    extra_clip: list[str] = field(default_factory=list)  # more CLIP folders / HF ids, loss averaged

    def validate(self) -> list[str]:
        bad = super().validate()
        return bad + ([] if self.reference in ("caption", "prompt") else [f"reference {self.reference!r} (expected caption or prompt)"])


@dataclass
class InvertSettings:
    """params `invert`."""

    steps: int = 10
    prompt: str = ""  # "" -> the video's caption (data/captions/videos.jsonl)
    batch_size: int = field(default=8, metadata=RUNTIME)  # frames per UNet call
    store_dtype: str = "float32"  # cached latents on disk: float32 | float16 | bfloat16
    base_for_tokenflow: bool = True  # also invert with the base weights when the identity branch is fine-tuned

    def validate(self) -> list[str]:
        bad = [f"{k} must be >= 1" for k in ("steps", "batch_size") if getattr(self, k) < 1]
        return bad + ([] if self.store_dtype in DTYPES else [f"store_dtype {self.store_dtype!r} (expected {', '.join(DTYPES)})"])


@dataclass
class EditSettings:
    """params `edit`. Fields marked RUNTIME change speed and memory, not the edit: frames are batched
    and attention is chunked/sliced over independent rows, so every output pixel is the same
    function of the inputs (up to float rounding of differently-sized kernels). Only the other fields
    enter an edit's skip-if-done fingerprint (`output_settings`). `vae_tiling` is NOT runtime: a tiled
    decode blends overlapping tiles, a different function of the latents than a whole-image decode.
    `methods`/`prompts` choose WHICH items exist; each item records its own method and prompt."""

    methods: list[str] = field(default_factory=method_names, metadata={"selection": True})  # registry.METHODS
    prompts: list[str] | str = field(default_factory=lambda: ["glasses", "old"], metadata={"selection": True})
    steps: int = field(default=10, metadata=cli("DDIM steps for inversion and editing", invert=True))
    guidance_scale: float = field(default=7.5, metadata=cli("classifier-free guidance scale"))
    negative_prompt: str = field(default="ugly, blurry, low res, unrealistic, unaesthetic", metadata=cli("negative prompt of the edit"))
    keyframe_interval: int = 8
    pnp_attn_t: float = 0.5
    pnp_f_t: float = 0.8
    batch_size: int = field(default=8, metadata=RUNTIME)  # frames per UNet call
    # prompts of one video edited in one call sharing the source pass (the edit stage); each holds its
    # own latents and keyframe outputs during a step, so memory grows with it
    prompts_per_pass: int = field(default=4, metadata=RUNTIME)
    attn_chunk: int = field(default=4096, metadata=RUNTIME)  # queries per attention / nearest-neighbour call
    ff_chunk: int = field(default=16, metadata=RUNTIME)  # latents per feed-forward chunk in the keyframe pass (0: all)
    attention_slicing: str | int | None = field(default=None, metadata=RUNTIME)  # diffusers' cross-attention slicing
    vae_slicing: bool = field(default=True, metadata=RUNTIME)
    vae_tiling: bool = False
    # keyframe attention for long videos (diffusion/keyframe_attention.py): exact TokenFlow joint
    # attention, or bounded (groups of keyframe_group_size keyframes + keyframe_anchors anchors);
    # auto: exact while its stored keyframe state fits keyframe_memory_gib, else bounded
    keyframe_attention: str = "auto"
    keyframe_group_size: int = 16
    keyframe_anchors: int = 4
    keyframe_memory_gib: float = 8.0

    def __post_init__(self):
        checks = {
            "steps": self.steps >= 1, "batch_size": self.batch_size >= 1, "keyframe_interval": self.keyframe_interval >= 1,
            "prompts_per_pass": self.prompts_per_pass >= 1,
            "attn_chunk": self.attn_chunk >= 1, "ff_chunk": self.ff_chunk >= 0,
            "pnp_attn_t": 0 <= self.pnp_attn_t <= 1, "pnp_f_t": 0 <= self.pnp_f_t <= 1,
            "guidance_scale": self.guidance_scale >= 0,
            "keyframe_attention (expected auto, exact or bounded)": self.keyframe_attention in ("auto", "exact", "bounded"),
            "keyframe_group_size (expected >= 1)": self.keyframe_group_size >= 1,
            "keyframe_anchors (expected >= 1)": self.keyframe_anchors >= 1,
            "keyframe_memory_gib (expected > 0)": self.keyframe_memory_gib > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise InputError("params.yaml", f"edit: invalid value for {', '.join(bad)}")
        for m in self.methods:
            get_method(m)

    def output_settings(self) -> dict[str, Any]:
        """The fields an edit's pixels depend on (what the skip-if-done fingerprint hashes)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not (f.metadata.get("runtime") or f.metadata.get("selection"))
        }


@dataclass
class MetricsSettings:
    """params `metrics`."""

    recognizers: list[str] = field(default_factory=lambda: ["sface", "dlib", "facenet"])
    flow: str = "dis"  # raft | dis
    raft_weights: str | None = None
    recognizer_weights: dict[str, str | None] = field(default_factory=lambda: {"vggface": None, "cosface": None, "facenet_vggface2": None})
    gallery: list[str] = field(default_factory=lambda: ["data/prepped", "data/media/stills"])
    gallery_cache: str | None = "data/gallery"
    clip: str | None = "models/clip"
    external_dir: str = "data/external_edits"
    external_methods: list[str] = field(default_factory=lambda: ["dva", "stit", "ltfe"])
    plot_recognizer: str | None = None  # None -> the first recogniser
    frame_stride: int = 1  # identity metrics on every k-th frame (1 = all, as the paper)

    def validate(self) -> list[str]:
        bad = [] if self.flow in ("dis", "raft") else [f"flow {self.flow!r} (expected dis or raft)"]
        return bad + ([] if self.frame_stride >= 1 else ["frame_stride must be >= 1"])


@dataclass
class ReportSettings:
    side_by_side: bool = True
    side_by_side_height: int = 128  # pixels per panel

    def validate(self) -> list[str]:
        return [] if self.side_by_side_height >= 8 else ["side_by_side_height must be >= 8"]


@dataclass
class TimingSettings:
    """params `timing` (Table 2)."""

    frames: list[int] = field(default_factory=lambda: [8, 16, 24])  # video lengths timed (ping-pong extended)
    video: str | None = None  # prepped video id to extend; None -> the first one
    method: str = "ours"
    prompt: str = "a person wearing glasses"

    def validate(self) -> list[str]:
        bad = [] if self.frames and min(self.frames) >= 1 else ["frames: expected a list of positive frame counts"]
        return bad + ([] if self.method in METHODS else [f"method {self.method!r} (expected one of {', '.join(METHODS)})"])


@dataclass
class Settings:
    """The root: every section of params.yaml."""

    seed: int = field(default=0, metadata=cli("keyframe sampling seed", invert=True))
    device: str = field(default="cpu", metadata=cli("cpu | cuda | cuda:N | auto | mps", invert=True))
    profile: str = "sample"  # set by conf/profile/<name>.yaml
    wandb: WandbSettings = field(default_factory=WandbSettings)
    data: DataSettings = field(default_factory=DataSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    caption: CaptionSettings = field(default_factory=CaptionSettings)
    finetune_id: IdentityTrainSettings = field(default_factory=IdentityTrainSettings)
    finetune_dir: DirectionalTrainSettings = field(default_factory=DirectionalTrainSettings)
    invert: InvertSettings = field(default_factory=InvertSettings)
    edit: EditSettings = field(default_factory=EditSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    timing: TimingSettings = field(default_factory=TimingSettings)

    def validate(self) -> list[str]:
        device = self.device.split(":")[0]
        return [] if device in DEVICES else [f"device {self.device!r} (expected cpu, cuda, cuda:N, auto or mps)"]

    def as_params(self) -> dict[str, Any]:
        """The plain mapping (what tracking and records store)."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------- building
def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field's annotation (int for float is fine; bool is never a number)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items()))
    return isinstance(value, hint) if isinstance(hint, type) else True


def build_section(cls: type[T], values: Any, name: str, source: str | Path = "params.yaml") -> T:
    """Dataclass `cls` from the mapping `values` (section `name` of `source`), type-checked field by
    field; unknown keys, wrong types and out-of-range values raise InputError naming `name.key`."""
    where = f"section '{name}'" if name else "top level"
    if not isinstance(values, dict):
        raise InputError(source, f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(source, f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build_section(hint, value, f"{name}.{key}" if name else key, source)
        elif not _matches(value, hint):
            where = f"{name}.{key}" if name else key
            raise InputError(source, f"{where}: {value!r} is not a valid {_hint_text(hint)}")
        else:
            kwargs[key] = value
    try:
        obj = cls(**kwargs)
    except InputError as e:  # a section's own __post_init__ check: re-anchor on the real file
        raise InputError(source, e.problem) from e
    bad = obj.validate() if hasattr(obj, "validate") else []
    if bad:
        raise InputError(source, f"{where}: " + "; ".join(bad))
    return obj


def _hint_text(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def settings_from_dict(params: dict[str, Any], source: str | Path = "params.yaml") -> Settings:
    """The typed tree from a composed parameter mapping (missing keys take the defaults)."""
    return build_section(Settings, params, "", source)


def load_settings(path: str | Path = "params.yaml") -> Settings:
    """params.yaml read and validated once (InputError naming the file and the key on any problem)."""
    from .config import load_params

    return settings_from_dict(load_params(path), Path(path))



def as_settings(params: Settings | dict[str, Any]) -> Settings:
    """`params` as the typed tree (a composed mapping is validated into one)."""
    return params if isinstance(params, Settings) else settings_from_dict(params)
