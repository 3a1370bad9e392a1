"""Read, validate, merge and write profile files; find the bundled profile of a GPU.

Every failure is one InputError line naming the file and the field (exit 2). Writes are
atomic: a temporary file in the same folder, then a rename, so an interrupted run leaves no
half-written profile.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sysplan.core.errors import InputError
from sysplan.profiles.schema import SCHEMA_VERSION, Profile

BUNDLED = Path(__file__).with_name("bundled")


def list_bundled() -> list[str]:
    """Names of the profiles shipped with sysplan."""
    return sorted(path.stem for path in BUNDLED.glob("*.yaml"))


def bundled_for_gpu(gpu_name: str) -> Profile | None:
    """The bundled profile measured on ``gpu_name`` (a catalog GPU name), newest first."""
    matches = [_bundled(name) for name in list_bundled()]
    matches = [p for p in matches if p.device is not None and p.device.gpu == gpu_name]
    return max(matches, key=lambda p: p.device.date) if matches else None


@functools.cache
def _bundled(name: str) -> Profile:
    """A bundled profile, parsed once per process."""
    return load_profile(BUNDLED / f"{name}.yaml")


def load_profile(source: str | Path) -> Profile:
    """A profile from a path or a bundled name, with its ``base`` tables merged in."""
    path = _locate(source)
    profile = parse_profile(_read(path), str(path))
    if profile.base is None:
        return profile
    if Path(profile.base).stem == path.stem:
        raise InputError(f"{path}: base: a profile cannot overlay itself")
    base = load_profile(profile.base if _is_bundled(profile.base) else path.parent / profile.base)
    return merge(base, profile)


def check_gpu(profile: Profile, gpu: Any, source: object) -> None:
    """InputError unless ``gpu`` lists a peak for the dtype of the profile's GEMM table (its
    efficiencies are times over that peak); ``source`` is the --profile value as given."""
    dtype = profile.gemm.dtype if profile.gemm is not None else None
    if dtype is None or dtype in gpu.peak_flops or dtype in ("bf16", "fp16"):
        return  # bf16 and fp16 share the bf16 peak every GPU lists
    raise InputError(f"--profile {source}: its GEMM table is {dtype} and {gpu.name} lists no "
                     f"{dtype} peak; accepted for it: a profile timed in "
                     f"{', '.join(sorted({*gpu.peak_flops, 'fp16'}))}")


def merge(base: Profile, overlay: Profile) -> Profile:
    """``overlay`` on top of ``base``: its tables and calibration win where present."""
    fields = {name: getattr(overlay, name) if getattr(overlay, name) is not None
              else getattr(base, name)
              for name in ("device", "gemm", "attention", "memory", "collectives", "overhead",
                           "eager", "contention", "calibration")}
    return Profile(schema_version=overlay.schema_version, name=overlay.name, base=None, **fields)


def parse_profile(data: Any, source: str) -> Profile:
    """Validate parsed YAML/JSON as a profile; InputError naming the first bad field."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping (a sysplan profile)")
    version = data.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(f"{source}: schema_version {version!r} is not readable (this sysplan "
                         f"reads profile {SCHEMA_VERSION.split('.')[0]}.x)")
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise InputError(f"{source}: {where}: {message}" if where else f"{source}: {message}") \
            from None


def profile_document(profile: Profile) -> dict[str, Any]:
    """The profile as plain data (tables as lists), ready for YAML or JSON."""
    return json.loads(profile.model_dump_json(exclude_none=True))


def write_profile(profile: Profile, path: Path) -> Path:
    """Write ``profile`` as YAML (or JSON for a .json path), atomically."""
    document = profile_document(profile)
    if path.suffix == ".json":
        text = json.dumps(document, indent=1)
    else:
        text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
    write_atomic(path, text)
    return path


def _umask() -> int:
    """The process umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename; InputError if the folder is unusable.

    However the write ends (an error, Ctrl-C), ``path`` is the old file or the whole new one,
    and the temporary file is gone.
    """
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; a file as open() makes it
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except OSError as error:
        raise InputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _is_bundled(name: str) -> bool:
    return name in list_bundled()


def _locate(source: str | Path) -> Path:
    path = Path(source)
    try:
        if path.is_file():
            return path
    except OSError:  # e.g. ENAMETOOLONG: a name of thousands of characters is no file
        pass
    if isinstance(source, str) and _is_bundled(source):
        return BUNDLED / f"{source}.yaml"
    bundled = ", ".join(list_bundled()) or "none"
    raise InputError(f"--profile {source}: no such file or bundled profile (bundled: {bundled})")


#: Deepest nesting of lists and mappings read from a profile (real ones are about 5 deep).
MAX_YAML_DEPTH = 100


def _check_yaml_depth(text: str, loader: type, path: Path) -> None:
    """InputError when ``text`` nests deeper than MAX_YAML_DEPTH: libyaml's composer recurses in
    C, so 100,000 nested lists crash the interpreter instead of raising RecursionError. The
    parser's events come without recursion and cost less than the load."""
    too_deep = InputError(f"{path}: not a profile: nested deeper than {MAX_YAML_DEPTH} levels")
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise too_deep
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as error:
        # newer libyaml (PyYAML 6.0.4's wheels) refuses deep flow nesting itself while its
        # scanner looks ahead, before the parser hands out the events counted above
        if "nesting depth" not in str(error.problem):
            raise
        raise too_deep from None


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read ({error})") from None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available
        if path.suffix == ".json":
            return json.loads(text)
        _check_yaml_depth(text, loader, path)
        return yaml.load(text, Loader=loader)
    except RecursionError:
        raise InputError(f"{path}: not a profile: nested too deeply to read") from None
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0]
        raise InputError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                         f"({first})") from None
