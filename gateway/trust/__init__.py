"""Trust: Ed25519 keys (``keys``), the signed envelope of docs/PROTOCOL.md section 4
(``envelope``) and the typed payloads it carries (``payload``). Bytes in, verified payload
out: every refusal is one ``Rejected`` with a short reason (``rejection``). Imports nothing
of ``gateway`` but the standard-library leaf ``regularfile``, so the device and the
operator's tools share one implementation of what a valid envelope is.
"""
