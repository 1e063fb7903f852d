"""Shared test setup: this folder is on sys.path (pytest's prepend import mode), so test modules in
subfolders can import helpers such as ``cli_helpers``."""
