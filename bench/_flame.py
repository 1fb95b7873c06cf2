"""Summarise py-spy's collapsed stacks (``--format raw``): where the time goes.

    python bench/_flame.py results/profile-....txt [--top 25] [--focus NAME]
                           [--exclude NAME] [--by-thread]

Prints the functions by *self* time (the frame on top of the stack, aggregated over its
lines, then per line) and by *inclusive* time (on the stack at all, counted once per
sample), as a percentage of the samples kept. ``--focus`` keeps only samples whose stack
contains NAME, ``--exclude`` drops those that do (e.g. imports: ``importlib._bootstrap``).
``--by-thread`` (for profiles taken with ``--threads --idle``) first shows each thread's
share of the samples and its top frames: on the event loop thread, ``select`` is the loop
waiting (for the writer's fsync, in the sequential workloads).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\w+)\)(?::\s*(?P<name>.*))?$")


def short(frame: str, keep_line: bool = False) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/bench/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    where = f"{path}:{m['line']}" if keep_line and m["line"] else path
    return f"{m['func']} ({where})"


def _samples(
    path: str, focus: str | None, exclude: tuple[str, ...] = ()
) -> list[tuple[str | None, list[str], int]]:
    out = []
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or (focus and focus not in stack) or any(x in stack for x in exclude):
                continue
            thread = None
            frames = []
            for fr in stack.split(";"):
                m = _THREAD.match(fr)
                if m:
                    thread = m["tid"]
                    if m["name"]:
                        _names[m["tid"]] = m["name"].split(" /")[0]
                elif fr and not fr.startswith("process "):
                    frames.append(fr)
            if frames:
                out.append((thread, frames, int(count_text)))
    return out


_names: dict[str, str] = {}


def _top(samples: list[tuple[str | None, list[str], int]], top: int, total: int) -> list[str]:
    self_t: Counter[str] = Counter()
    self_line: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for _, frames, count in samples:
        self_t[short(frames[-1])] += count
        self_line[short(frames[-1], keep_line=True)] += count
        for name in {short(fr) for fr in frames}:
            incl[name] += count
    out = [f"\n-- self time (top {top}) --"]
    out += [f"{100 * n / total:6.1f}%  {name}" for name, n in self_t.most_common(top)]
    out.append(f"\n-- self time by line (top {top}) --")
    out += [f"{100 * n / total:6.1f}%  {name}" for name, n in self_line.most_common(top)]
    out.append(f"\n-- inclusive time (top {top}) --")
    out += [f"{100 * n / total:6.1f}%  {name}" for name, n in incl.most_common(top)]
    return out


def summarise(
    path: str, top: int = 25, focus: str | None = None, by_thread: bool = False, exclude: tuple[str, ...] = ()
) -> str:
    _names.clear()
    samples = _samples(path, focus, exclude)
    total = sum(c for _, _, c in samples) or 1
    out = [f"{total} samples" + (f" (stacks containing {focus!r})" if focus else "")]
    if exclude:
        out[0] += f" (without stacks containing {', '.join(map(repr, exclude))})"
    if by_thread:
        # Threads of the same name (one writer per engine, pooled workers) are merged.
        per: dict[str, list[tuple[str | None, list[str], int]]] = defaultdict(list)
        for s in samples:
            per[_names.get(s[0] or "", str(s[0]))].append(s)
        out.append(
            "\n-- by thread (same name merged): share of samples, then its top frames (self, by line) --"
        )
        for name, group in sorted(per.items(), key=lambda kv: -sum(c for _, _, c in kv[1])):
            n = sum(c for _, _, c in group)
            out.append(f"{100 * n / total:6.1f}%  thread {name}")
            lines: Counter[str] = Counter()
            for _, frames, count in group:
                lines[short(frames[-1], keep_line=True)] += count
            out += [f"           {100 * c / n:5.1f}% of it  {name}" for name, c in lines.most_common(6)]
    out += _top(samples, top, total)
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--focus")
    parser.add_argument("--by-thread", action="store_true")
    parser.add_argument("--exclude", action="append", default=[], help="drop stacks containing this")
    args = parser.parse_args()
    print(summarise(args.path, args.top, args.focus, args.by_thread, tuple(args.exclude)))
