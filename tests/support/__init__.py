"""Helpers shared by every test module: sample events (:mod:`.events`), bounded waits
(:mod:`.waiting`), fake clocks (:mod:`.clocks`) and worker harnesses (:mod:`.workers`).

A helper used by one package's tests only stays next to them (``tests/<package>/support.py``).
"""
