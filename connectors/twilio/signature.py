"""Is this request really from Twilio? The form body, the URL Twilio called, the signature.

Twilio signs every webhook with HMAC-SHA1 of the full URL it requested followed by each
POST parameter (sorted by name, ``name + value``), keyed with the account's Auth Token, and
sends the result as ``X-Twilio-Signature``. :class:`twilio.request_validator.RequestValidator`
does the computing; this module feeds it the two things a web framework tends to get wrong:

* **the URL Twilio called.** Behind a proxy or tunnel the hub sees ``http://127.0.0.1:8000/…``
  while Twilio signed ``https://crm.example.com/…``; with ``ECRM_PUBLIC_URL`` set, the URL is
  that base + the request's path + its query string, exactly as received.
* **every value of a repeated parameter.** The validator reads multi-valued parameters
  through ``getlist`` (as with Django's QueryDict); a plain dict would keep one value and
  make a genuine request fail. :class:`FormParams` keeps all of them, and keeps empty values
  (``CallerName=``), which Twilio signs too.

The body is parsed here with :mod:`urllib.parse` (no multipart dependency; Twilio only sends
``application/x-www-form-urlencoded``).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator

from pipeline.errors import ValidationError

SIGNATURE_HEADER = "X-Twilio-Signature"
#: Twilio sends a few dozen parameters; an SMS with 10 media items has about 50.
MAX_FIELDS = 200


class FormParams(dict[str, list[str]]):
    """Form parameters, each name with all its values in order (``getlist`` for the validator)."""

    def getlist(self, name: str) -> list[str]:
        return list(self.get(name, []))

    def first(self) -> dict[str, str]:
        """One value per name (the first), for reading fields."""
        return {name: values[0] for name, values in self.items() if values}


def parse_form(raw: bytes) -> FormParams:
    """Parse an ``application/x-www-form-urlencoded`` body; ``ValidationError`` if malformed."""
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS
        )
    except UnicodeDecodeError:
        raise ValidationError("body", "form body is not UTF-8") from None
    except ValueError as exc:  # more fields than MAX_FIELDS
        raise ValidationError("body", str(exc)) from None
    params = FormParams()
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    return params


def signed_url(public_url: str | None, own_url: str, path: str, query: str) -> str:
    """The URL Twilio signed: ``public_url`` + path + query behind a proxy, else our own."""
    if not public_url:
        return own_url
    return public_url.rstrip("/") + path + (f"?{query}" if query else "")


def is_genuine(auth_token: str, url: str, params: Mapping[str, list[str]], signature: str) -> bool:
    """True when ``signature`` is Twilio's for ``url`` and ``params`` under ``auth_token``.

    The validator tries the URL with and without its default port, as Twilio's own
    signing is inconsistent about it; the comparison does not stop at the first difference.
    """
    if not signature:
        return False
    form = params if isinstance(params, FormParams) else FormParams(params)
    return bool(RequestValidator(auth_token).validate(url, form, signature))


__all__ = ["MAX_FIELDS", "SIGNATURE_HEADER", "FormParams", "is_genuine", "parse_form", "signed_url"]
