"""Whether a model name that is neither a local directory nor a bundled model can be fetched from the Hugging Face hub,
decided at once: on a machine without the hub, huggingface_hub retries for half a minute (a console line per retry)
before it fails, so a typo in `model:` would be answered slowly and noisily.

Asked once per process: the hub's own address (`HF_ENDPOINT`) is sent one HTTP request with a short timeout; `HF_HUB_OFFLINE`
(or `TRANSFORMERS_OFFLINE`) says "not reachable" without trying. A model already in the local hub cache is used from
there, reachable or not.
"""

from __future__ import annotations

import difflib
import functools
import os
import threading
from pathlib import Path

REACH_TIMEOUT_S = 2.0  # one HTTP request (name lookup included) to the hub's address
TRUTHY = {"1", "true", "yes", "on"}


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


@functools.lru_cache(maxsize=None)
def _unreachable(url: str, offline: bool) -> str | None:
    if offline:
        return "HF_HUB_OFFLINE is set"
    outcome: list[str | None] = []

    def ask() -> None:
        import urllib.error
        import urllib.request

        try:  # any HTTP answer, an error status included, means the hub is there (proxies as the hub client uses)
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=REACH_TIMEOUT_S).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome.append(getattr(reason, "strerror", None) or str(reason) or type(exc).__name__)

    # the name lookup is not covered by the request's timeout: the thread is waited for at most that long
    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(REACH_TIMEOUT_S + 0.5)
    if not outcome:
        return f"{url}: no answer within {REACH_TIMEOUT_S:g} s"
    return None if outcome[0] is None else f"{url}: {outcome[0]}"


def hub_problem() -> str | None:
    """Why the hub cannot be asked for a model now (None: it answers); checked once per process and address."""
    offline = any(os.environ.get(name, "").strip().lower() in TRUTHY
                  for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return _unreachable(endpoint(), offline)


def cached_snapshot(repo_id: str) -> str | None:
    """The local hub cache's copy of a model (its snapshot directory), if it has one."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid repo id
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def not_found_message(name: str, bundled: list[str], problem: str) -> str:
    """For a model name that is nowhere: not local, not bundled, and the hub cannot be asked."""
    close = difflib.get_close_matches(name, bundled, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"model: {name!r} is not a local directory, not a bundled model ({', '.join(bundled)}), and the Hugging "
            f"Face hub is not reachable ({problem}){hint}")
