"""Params sections that belong to one stage's module but that `mmrec.config` must import.

Each module here is a leaf (pydantic, constants, errors): `config.py` imports them, so they must
never import a module above config (that was the 13-module import cycle, issue #13). The
sections with no such dependency live in `mmrec/config.py` itself.
"""
