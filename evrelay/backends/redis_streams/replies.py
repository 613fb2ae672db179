"""Redis's error replies, read the same whichever parser read them, and what each means
for evrelay: an outage to wait out (a transient reply), a refusal (an ACL, exit 3), or an
error of the command. The backend's `translate()` and `is_transient_reply()` answer from
here; the producer and readers ask the backend."""

from __future__ import annotations

from evrelay.errors import (
    BackendUnavailable,
    EvrelayError,
    NotFoundError,
    PermissionDenied,
    UsageError,
)

TRANSIENT_REPLIES = frozenset({"OOM", "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "READONLY"})
"""Error replies about the server's state, not the command: out of memory under
noeviction, loading its data, a script running, a failover. Retried, never refused for good."""


def reply_code(exc: Exception) -> str:
    """The error code of a Redis error reply (`OOM`, `NOPERM`, `NOGROUP`, ...), whichever
    parser read it: redis-py's own parsers cut the code off the text of the replies they
    know and raise a class of their own for them (NoPermissionError("this user has no
    permissions ...")), a bare hiredis.Reader keeps the reply's text whole. "" when the
    exception is not an error reply."""
    code = getattr(exc, "status_code", None)  # redis-py >= 6 keeps the code it cut off
    if isinstance(code, str) and code:
        return code
    from redis import exceptions

    for name, known in _CODE_OF_CLASS:
        cls = getattr(exceptions, name, None)
        if cls is not None and isinstance(exc, cls):
            return known
    if not isinstance(exc, exceptions.ResponseError):
        return ""
    first = str(exc).split(" ", 1)[0]
    return first if first.isupper() and first.isalpha() else "ERR"


# redis-py's classes for the error replies whose code its parsers cut off, subclasses first.
_CODE_OF_CLASS = (
    ("NoPermissionError", "NOPERM"),
    ("OutOfMemoryError", "OOM"),
    ("BusyLoadingError", "LOADING"),
    ("ReadOnlyError", "READONLY"),
    ("TryAgainError", "TRYAGAIN"),
    ("MasterDownError", "MASTERDOWN"),
    ("ClusterDownError", "CLUSTERDOWN"),
    ("NoScriptError", "NOSCRIPT"),
    ("ExecAbortError", "EXECABORT"),
)


def error_for_reply(exc: Exception, what: str, *, where: str, origin: str | None, user: str | None) -> EvrelayError:
    """A redis-py exception as an evrelay error (credentials and reachability -> exit 3).
    `where` is the server's host:port, `origin` the profile or address it came from,
    `user` the ACL user the url names (None: the default user); never the password."""
    import redis

    detail = f" ({what})" if what else ""
    of_origin = f" of {origin}" if origin else ""
    code = reply_code(exc)
    if code == "NOPERM":
        who = f"user {user!r}" if user else "the default user"
        reason = str(exc) if str(exc).startswith("NOPERM") else f"NOPERM {exc}"
        return PermissionDenied(
            f"Redis at {where}{of_origin} refused {what or 'a command'}: the ACL of {who} does not allow it ({reason})",
            hint="an ACL is not an outage that passes: grant the command and key (ACL SETUSER), or use a user that may",
        )
    if isinstance(exc, redis.AuthenticationError) or code in ("NOAUTH", "WRONGPASS"):
        return BackendUnavailable(f"Redis at {where} refused the credentials{of_origin}{detail}: {exc}")
    if isinstance(exc, redis.ConnectionError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        reason = str(exc).rpartition("certificate verify failed: ")[2].split(" (_ssl")[0] or str(exc)
        return BackendUnavailable(
            f"Redis at {where}: the server's TLS certificate is not trusted"
            + (f" by {origin}" if origin else "") + f" ({reason})",
            hint="give the CA that signed it as ssl_ca_certs (?ssl_ca_certs=PATH in the url, or in the profile's options)",
        )
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return BackendUnavailable(
            f"Redis at {where} could not be reached{detail}: {exc}",
            hint="is redis-server running, and is the url right?",
        )
    message = str(exc)
    if code == "NOGROUP":
        return NotFoundError(f"Redis{detail}: {message}")
    if code == "WRONGTYPE":
        return UsageError(f"Redis{detail}: that key is not a stream ({message})")
    return EvrelayError(f"Redis{detail}: {message}")
