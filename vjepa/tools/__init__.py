"""Offline dataset tooling, run from the command line (`vjepa data check|make-shards|convert`).

check.py scans a list, folder or shards and writes a cleaned list; make_shards.py (with reencode.py, the PyAV
probe and re-encoder of its workers) packs a CSV list into tar shards; convert.py (with convert_io.py, its
annotation readers and writers) turns public datasets' annotation files into CSV lists. They read and write files
before a run, and nothing in training imports them: no module of vjepa/ outside this package imports vjepa.tools
(tests/test_layout.py; vjepa/cli.py names their modules as strings and imports only the one asked for). What
they share with the data pipeline (file kinds, shard format, list parsing, decoders) lives in vjepa/data/ and is
imported from there.
"""
