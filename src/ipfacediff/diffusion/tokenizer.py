"""The CLIP BPE tokenizer built offline from the vocabulary open_clip_torch ships (tiny models use it)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ..errors import InputError
from .architectures import MAX_TOKENS


def clip_bpe_path() -> Path:
    """The CLIP BPE merges shipped inside open_clip_torch (no download)."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise InputError(path, "CLIP BPE vocabulary not found in open_clip_torch (reinstall open-clip-torch)")
    return path


def bytes_to_unicode() -> dict[int, str]:
    # OpenAI CLIP's reversible byte -> printable-unicode table (vocab order depends on it)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_clip_tokenizer_files(out_dir: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt from open_clip's BPE file, built the way OpenAI CLIP builds its vocabulary."""
    lines = gzip.open(clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_vocab = list(bytes_to_unicode().values())
    vocab = byte_vocab + [v + "</w>" for v in byte_vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_file, merges_file


def build_clip_tokenizer(work_dir: Path):
    """A real CLIPTokenizer (OpenAI/OpenCLIP vocabulary, 77 tokens, pads with "!" = id 0 like OpenCLIP/SD 2)."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_clip_tokenizer_files(work_dir)
    return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token="!", model_max_length=MAX_TOKENS)
