"""The ground floor: the device file's pydantic models (``models``, ``stages``) and the YAML
loader that maps every error to a file line (``file``). Imports nothing of ``gateway``
but the standard-library leaf ``regularfile``.
"""
