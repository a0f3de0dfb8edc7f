"""The wheels the GPU check machine lacks, trimmed to fit what one run may carry there (`make gpu-bundle`).

The GPU machine (../shared/notes/gpu-machine.md) has Python 3.12 with torch (CUDA 13.0), transformers, peft, pandas,
pyarrow, matplotlib, scikit-learn and more, but no Ray, MLflow, Optuna or pydantic, and no network. This script:

1. downloads, for CPython 3.12 on manylinux x86_64, what a sweep imports and the image lacks (NEEDED, at the versions
   of requirements-lock.txt, with their dependencies), and bitsandbytes without its dependencies (torch is there);
   peftsweep itself is the checkout carried beside it;
2. leaves out every wheel of a package the image has (IMAGE);
3. trims what a sweep never loads: Ray's Java jars, RLlib, Ray's LLM and Serve libraries and the dashboard's web
   client; every bitsandbytes library but the one for the machine's CUDA (--cuda) and the CPU one; and strips the
   symbol tables of every native library and of Ray's two executables;
4. checks the bundle is under --limit-mib, that every dependency a bundled wheel declares is bundled, provided by the
   image or named in NOT_LOADED, and that the wheels install offline (`pip install --no-index`) into an empty
   directory.

    .venv/bin/python bench/gpu_bundle.py                   # -> .gpu-bundle/ (git-ignored), for the GPU machine
    .venv/bin/python bench/gpu_bundle.py --python 3.11 --out /tmp/bundle311   # the same for this machine (dry run)

On the GPU machine: `python bench/gpu_sweep.py` installs it (bench/gpu_sweep.py --help).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a sweep imports beyond the image (MLflow's client is all a sweep needs: the skinny package; the server, UI and
# PostgreSQL driver stay on the tracking machine).
# The dashboard (plotly) is drawn by the CLI after a sweep, not by the sweep: bench/gpu_sweep.py calls the sweep itself.
# cryptography: MLflow's SQL store imports it (its webhook secrets), which mlflow-skinny does not declare.
NEEDED = ["ray[tune,train]", "mlflow-skinny", "optuna", "pydantic", "datasets", "cryptography"]
# Declared, never loaded by a sweep (the CPU dry run, bench/gpu_sweep.py --dry-run, runs without them), and left out
# with everything only they pull in.
NOT_LOADED = {"google-auth": "declared by databricks-sdk; loaded only to sign in to a Databricks workspace (MLflow "
                             "imports the `databricks` package itself, so databricks-sdk is bundled)"}
# The GPU image's packages (the machine's notes) and what they pull in for certain (what `pip install` of them gave in
# an empty environment, bench/gpu_sweep.py's dry run; plus triton, which CUDA builds of torch need); never bundled.
# Anything else a bundled wheel needs is bundled: the dry run runs in such an environment and fails on what is missing.
IMAGE = {
    "torch", "transformers", "peft", "pandas", "pyarrow", "matplotlib", "scikit-learn", "safetensors", "tokenizers",
    "accelerate", "numpy", "scipy", "huggingface-hub", "hf-xet", "pyyaml", "regex", "tqdm", "packaging", "filelock",
    "fsspec", "jinja2", "markupsafe", "networkx", "sympy", "mpmath", "typing-extensions", "setuptools", "psutil",
    "pillow", "kiwisolver", "cycler", "fonttools", "contourpy", "pyparsing", "python-dateutil", "six", "joblib",
    "threadpoolctl", "idna", "triton", "typer", "click", "shellingham", "rich", "markdown-it-py", "mdurl", "pygments",
    "anyio", "h11"}
TRIM = {"ray": ("ray/jars/", "ray/rllib/", "ray/llm/", "ray/serve/", "ray/dashboard/client/")}
EXECUTABLES = ("ray/core/src/ray/gcs/gcs_server", "ray/core/src/ray/raylet/raylet")  # stripped too, as the .so files
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64")


def name_of(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def target_flags(python: str) -> list[str]:
    tag = "cp" + python.replace(".", "")
    flags = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", tag]
    for platform in PLATFORMS:
        flags += ["--platform", platform]
    return flags


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def download(raw: Path, python: str) -> None:
    pins = lock_pins()
    pinned = [f"{spec}=={pins[re.sub(r'[[].*', '', spec)]}" for spec in NEEDED]
    constraints = raw / "constraints.txt"  # the lock, less torch (never downloaded here: the image has it)
    constraints.write_text("\n".join(f"{k}=={v}" for k, v in pins.items() if k in set(pins) - {"torch"}) + "\n")
    pip("download", "-d", str(raw), *target_flags(python), "-c", str(constraints), *pinned)
    pip("download", "-d", str(raw), *target_flags(python), "--no-deps", f"bitsandbytes=={pins['bitsandbytes']}")


def stripped(data: bytes) -> bytes:
    """An ELF binary without its symbol table (`strip --strip-unneeded`: what dynamic linking needs stays)."""
    if not data.startswith(b"\x7fELF"):
        return data
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        subprocess.run(["strip", "--strip-unneeded", f.name], check=True)
        return Path(f.name).read_bytes()


def trimmed(wheel: Path, out: Path, drop, strip: tuple[str, ...] = ()) -> Path:
    """A copy of the wheel without the members `drop` says, the `strip` ones stripped, its RECORD rewritten to
    match (a changed member's line without hash: pip does not check it)."""
    target = out / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        kept = [i for i in src.infolist() if not drop(i.filename)]
        for info in kept:
            data = src.read(info.filename)
            if info.filename in strip:
                data = stripped(data)
            elif info.filename.endswith(".dist-info/RECORD"):
                data = "".join((line.split(",")[0] + ",," if line.split(",")[0] in strip else line) + "\n"
                               for line in data.decode().splitlines() if not drop(line.split(",")[0])).encode()
            member = zipfile.ZipInfo(info.filename, info.date_time)
            member.external_attr, member.compress_type = info.external_attr, zipfile.ZIP_DEFLATED
            dst.writestr(member, data, compresslevel=9)
    return target


def requirements(wheel: Path, python: str, extras: set[str]) -> list[str]:
    """The names the wheel depends on, markers evaluated for Linux x86_64, this Python and these extras."""
    from packaging.requirements import Requirement

    env = {"python_version": python, "python_full_version": python + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix"}
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if not req.marker or any(req.marker.evaluate(env | {"extra": e}) for e in extras | {""}):
                names.append(re.sub(r"[-_.]+", "-", req.name).lower())
    return names


def needed_wheels(raw: Path, python: str) -> tuple[dict[str, Path], list[str]]:
    """The downloaded wheels a sweep needs: what NEEDED and bitsandbytes depend on, transitively, less the image's
    packages and NOT_LOADED (with what only they pull in); and every dependency found nowhere (problems)."""
    wheels = {name_of(w): w for w in raw.glob("*.whl")}
    roots = {re.sub(r"\[.*", "", s): set(re.findall(r"\[(.*)\]", s)[0].split(",")) if "[" in s else set()
             for s in NEEDED} | {"bitsandbytes": set()}
    taken, todo, problems = {}, list(roots), []
    while todo:
        name = todo.pop()
        if name in taken or name in IMAGE or name in NOT_LOADED:
            continue
        if name not in wheels:
            problems.append(f"no wheel for {name}, which a bundled package needs and the image lacks")
            continue
        taken[name] = wheels[name]
        if name != "bitsandbytes":  # its one dependency beyond the image is torch
            todo += requirements(wheels[name], python, roots.get(name, set()))
    return taken, problems


def build(raw: Path, out: Path, python: str, cuda: str) -> tuple[list[Path], list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    taken, problems = needed_wheels(raw, python)
    bundled = []
    for name, wheel in sorted(taken.items()):
        with zipfile.ZipFile(wheel) as z:
            native = tuple(n for n in z.namelist() if n.endswith(".so") or n in EXECUTABLES)
        if name == "bitsandbytes":
            keep = (f"libbitsandbytes_cuda{cuda}.so", "libbitsandbytes_cpu.so")
            bundled.append(trimmed(wheel, out, lambda f: f.endswith(".so") and not f.endswith(keep), native))
        elif name in TRIM or native:
            prefixes = TRIM.get(name, ())
            bundled.append(trimmed(wheel, out, lambda f, p=prefixes: bool(p) and f.startswith(p), native))
        else:
            target = out / wheel.name
            target.write_bytes(wheel.read_bytes())
            bundled.append(target)
    return bundled, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / ".gpu-bundle"))
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python (default 3.12)")
    parser.add_argument("--cuda", default="130", help="the CUDA build of bitsandbytes to keep (torch's: 13.0 -> 130)")
    parser.add_argument("--limit-mib", type=float, default=60.0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        download(raw, args.python)
        wheels, problems = build(raw, out, args.python, args.cuda)
        size = sum(w.stat().st_size for w in wheels) / 2**20
        for w in sorted(wheels, key=lambda w: -w.stat().st_size):
            print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
        print(f"bundle: {len(wheels)} wheels, {size:.1f} MiB (limit {args.limit_mib:.0f} MiB) in {out}")
        if size > args.limit_mib:
            problems.append(f"the bundle is {size:.1f} MiB, over the {args.limit_mib:.0f} MiB limit")
        target = Path(tmp) / "installed"
        pip("install", "--no-index", "--no-deps", "--target", str(target), *target_flags(args.python),
            *map(str, wheels))
        if (target / "ray" / "jars").exists() or not list((target / "ray").glob("_raylet*.so")):
            problems.append("the installed Ray still has its jars, or lacks _raylet")
        print(f"installed offline (pip install --no-index) into an empty directory: "
              f"{sum(1 for _ in target.rglob('*')):,} files")
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
