"""The causal generator's forward passes on llama.cpp (``generators.X.runtime: llamacpp``).

llama.cpp runs the GGUF file itself (Gemma's Q4_K_M weights stay 4-bit, no
dequantisation to float32) through the ``llama-cpp-py-sync`` wheel's C API.
Only the model's forward pass moves here: the prompts and their token ids
(``QueryGenerator.prompt_ids``, the Hugging Face tokenizer of the same GGUF),
the seeded top-k sampler, the stop rules and the detokenisation are the
torch runtime's own (``decoding.decode_loop``), so the rest of the generate
stage is untouched and a rerun of a config draws the same questions.

Layout of a batch in llama.cpp's KV memory (one unified cache):
sequence 0 holds the shared few-shot prefix (kept between batches of the
same prefix); each prompt's suffix is decoded on a sequence that first
shares the prefix's cells (``llama_memory_seq_cp``: no copy, no recompute),
with logits only for its last token; its ``n`` sample rows share that prefill
the same way.  Every decode step feeds one token per unfinished row in one
``llama_decode`` call; a finished row's cells are freed at once.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bundled import PREFIX, ModelRef, resolve

# The pip package whose prebuilt CPU wheel carries llama.cpp (CFFI ABI mode: no build step).
PACKAGE = "llama_cpp_py_sync"
PIP_NAME = "llama-cpp-py-sync"
# Bundled specs whose weights exist as a GGUF file: the HF-format Gemma is converted from it,
# so both run the packaged file itself.
BUNDLED_GGUF = {f"{PREFIX}gemma3-270m": f"{PREFIX}gemma3-270m-gguf", f"{PREFIX}gemma3-270m-gguf": f"{PREFIX}gemma3-270m-gguf"}
# The C callbacks handed to llama.cpp, alive as long as the process (see LlamaCppModel._silence).
CALLBACKS: Dict[str, object] = {}
# Tokens llama_decode takes per call: a batch's suffixes are fed in chunks of this many.
DECODE_CHUNK = 512


def gguf_problem(model: str, gguf_file: str) -> str:
    """Why ``model`` (+ ``gguf_file``) names no GGUF weights for llama.cpp, or "" if it does (no file is read)."""
    if gguf_file or model in BUNDLED_GGUF or model.endswith(".gguf"):
        return ""
    return f"model {model!r} has no GGUF weights; use {', '.join(sorted(BUNDLED_GGUF))}, a .gguf file or gguf_file"


def load_problem() -> str:
    """Why llama.cpp cannot run in this process, or "": its package imports and its library loads."""
    try:
        from llama_cpp_py_sync.llama import get_lib

        get_lib()
    except ImportError:
        return f"llama.cpp needs the {PIP_NAME} package (pip install {PIP_NAME}; the project's llamacpp extra)"
    except (OSError, RuntimeError) as e:
        # e.g. a wheel built against a newer glibc: "version `GLIBC_2.38' not found".
        detail = str(e).split(": ")[-1].split(".  ")[0][:160]
        return f"the llama.cpp library of {PIP_NAME} does not load here ({detail})"
    return ""


def gguf_path(model: str, gguf_file: str) -> str:
    """The GGUF file a llama.cpp generator loads (bundled GGUFs are materialised first)."""
    if model.endswith(".gguf") and not gguf_file:
        return model
    ref: ModelRef = resolve(BUNDLED_GGUF.get(model, model))
    name = gguf_file or ref.gguf_file
    if not name:
        raise ValueError(gguf_problem(model, gguf_file))
    return os.path.join(ref.path, name)


class LlamaCppModel:
    """A GGUF causal LM loaded once in llama.cpp; :meth:`sample` is ``decoding.causal_sample`` on it."""

    def __init__(self, path: str, threads: int, max_rows: int, max_tokens: int):
        """``max_rows`` sequences decoded together, each up to ``max_tokens`` positions (prompt + new tokens)."""
        from llama_cpp_py_sync.llama import get_ffi, get_lib

        self.lib, self.ffi = get_lib(), get_ffi()
        self.lib.llama_backend_init()
        self._silence()
        mp = self.lib.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.progress_callback = self._quiet  # the default prints a dot per tensor batch to stderr
        self.model = self.lib.llama_model_load_from_file(path.encode(), mp)
        if self.model == self.ffi.NULL:
            raise RuntimeError(f"llama.cpp could not load {path}")
        # Sequence 0 is the prefix; rows take 1..max_rows.  A prompt's rows share its cells, so
        # the cache holds one prefix plus at most max_rows rows' own tokens.
        self.n_seq = max_rows + 1
        cp = self.lib.llama_context_default_params()
        cp.n_ctx = max_tokens * self.n_seq
        cp.n_batch = cp.n_ubatch = DECODE_CHUNK
        cp.n_seq_max = self.n_seq
        cp.n_threads = cp.n_threads_batch = max(1, threads)
        cp.embeddings = False
        # One cache for every sequence: a copied sequence shares the cells, and the sliding-window
        # layers keep every position (a copy of a windowed sequence would otherwise lose its start).
        cp.kv_unified = True
        cp.swa_full = True
        self.ctx = self.lib.llama_init_from_model(self.model, cp)
        if self.ctx == self.ffi.NULL:
            raise RuntimeError(f"llama.cpp could not create a context for {path} ({self.n_seq} sequences x {max_tokens} tokens)")
        self.mem = self.lib.llama_get_memory(self.ctx)
        self.n_vocab = int(self.lib.llama_vocab_n_tokens(self.lib.llama_model_get_vocab(self.model)))
        self.max_rows, self.max_tokens = max_rows, max_tokens
        self.prefix: Optional[Tuple[int, ...]] = None  # what sequence 0 holds

    def _silence(self) -> None:
        """Route llama.cpp's log lines (one per tensor at load) to nowhere but errors."""
        if not CALLBACKS:
            # Module-level and made once: llama.cpp keeps the log callback process-wide, so it
            # must outlive every model (a freed one is called by the next model's log line).
            @self.ffi.callback("void(enum ggml_log_level, const char *, void *)")
            def log(level, text, _data):  # noqa: ANN001 - C callback
                if level >= 4:  # GGML_LOG_LEVEL_ERROR
                    os.write(2, self.ffi.string(text))

            CALLBACKS["log"] = log
            CALLBACKS["progress"] = self.ffi.callback("bool(float, void *)", lambda _p, _d: True)  # True: go on loading
        self.lib.llama_log_set(CALLBACKS["log"], self.ffi.NULL)
        self._quiet = CALLBACKS["progress"]

    def close(self) -> None:
        """Free the context and the model (also at garbage collection)."""
        if getattr(self, "ctx", None) is not None and self.ctx != self.ffi.NULL:
            self.lib.llama_free(self.ctx)
        if getattr(self, "model", None) is not None and self.model != self.ffi.NULL:
            self.lib.llama_model_free(self.model)
        self.ctx = self.model = None

    def __del__(self):
        self.close()

    def _decode(self, tokens: Sequence[int], pos: Sequence[int], seqs: Sequence[int], want: Sequence[bool]) -> np.ndarray:
        """Feed tokens (chunks of ``DECODE_CHUNK``); the logits ``[sum(want), V]`` of the wanted ones, in order."""
        out: List[np.ndarray] = []
        for a in range(0, len(tokens), DECODE_CHUNK):
            b = min(len(tokens), a + DECODE_CHUNK)
            batch = self.lib.llama_batch_init(b - a, 0, 1)
            try:
                batch.n_tokens = b - a
                for i in range(a, b):
                    batch.token[i - a], batch.pos[i - a], batch.n_seq_id[i - a] = tokens[i], pos[i], 1
                    batch.seq_id[i - a][0], batch.logits[i - a] = seqs[i], 1 if want[i] else 0
                rc = self.lib.llama_decode(self.ctx, batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc} ({b - a} tokens; is the context too small?)")
                n = sum(1 for i in range(a, b) if want[i])
                if n:
                    # The outputs of one decode call are contiguous, in batch order.
                    buf = self.ffi.buffer(self.lib.llama_get_logits(self.ctx), n * self.n_vocab * 4)
                    out.append(np.frombuffer(buf, dtype=np.float32).reshape(n, self.n_vocab).copy())
            finally:
                self.lib.llama_batch_free(batch)
        return np.concatenate(out) if out else np.zeros((0, self.n_vocab), np.float32)

    def _hold_prefix(self, prefix: Tuple[int, ...]) -> None:
        """Sequence 0 holds ``prefix`` and no other sequence holds anything."""
        if self.prefix != prefix:
            self.lib.llama_memory_clear(self.mem, True)
            if prefix:
                self._decode(list(prefix), list(range(len(prefix))), [0] * len(prefix), [False] * len(prefix))
            self.prefix = prefix
        else:
            for s in range(1, self.n_seq):
                self.lib.llama_memory_seq_rm(self.mem, s, -1, -1)

    def sample(self, prefix: Tuple[int, ...], suffixes: List[List[int]], counts: Sequence[int], seeds: Sequence[int],
               loop: Callable, **kw) -> List[List[int]]:
        """Sampled continuations of ``prefix + suffixes[i]``, ``counts[i]`` each (one seed per row), prompt-major.

        ``loop`` is ``decoding.decode_loop`` (passed in so this module needs no torch at import);
        ``kw`` its sampling settings.  Rows over ``max_rows`` are refused: the caller batches.
        """
        import torch

        rows = sum(counts)
        if rows > self.max_rows:
            raise ValueError(f"{rows} sample rows in one batch; this context holds {self.max_rows}")
        longest = len(prefix) + max(len(s) for s in suffixes) + int(kw["max_new_tokens"])
        if longest > self.max_tokens:
            raise ValueError(f"a prompt of {longest - int(kw['max_new_tokens'])} tokens + max_new_tokens exceeds {self.max_tokens}")
        self._hold_prefix(prefix)
        first = [1 + sum(counts[:i]) for i in range(len(counts))]  # each prompt's first row sequence
        toks: List[int] = []
        pos: List[int] = []
        seqs: List[int] = []
        want: List[bool] = []
        for s, suf in zip(first, suffixes):
            if prefix:
                self.lib.llama_memory_seq_cp(self.mem, 0, s, -1, -1)
            toks += suf
            pos += range(len(prefix), len(prefix) + len(suf))
            seqs += [s] * len(suf)
            want += [False] * (len(suf) - 1) + [True]
        last = self._decode(toks, pos, seqs, want)
        for s, c in zip(first, counts):
            for r in range(1, c):  # the prompt's other rows share its prefill
                self.lib.llama_memory_seq_cp(self.mem, s, s + r, -1, -1)
        rep = np.repeat(np.arange(len(counts)), counts)
        state = {"seq": [1 + r for r in range(rows)], "pos": [len(prefix) + len(suffixes[i]) for i in rep]}

        def step(tokens: torch.Tensor) -> torch.Tensor:
            t = tokens.tolist()
            logits = self._decode(t, state["pos"], state["seq"], [True] * len(t))
            state["pos"] = [p + 1 for p in state["pos"]]
            return torch.from_numpy(logits)

        def select(idx: torch.Tensor) -> None:
            keep = idx.tolist()
            for j in sorted(set(range(len(state["seq"]))) - set(keep)):
                self.lib.llama_memory_seq_rm(self.mem, state["seq"][j], -1, -1)  # a finished row frees its cells
            state["seq"] = [state["seq"][j] for j in keep]
            state["pos"] = [state["pos"][j] for j in keep]

        return loop(torch.from_numpy(last[rep]), seeds, step, select, **kw)
