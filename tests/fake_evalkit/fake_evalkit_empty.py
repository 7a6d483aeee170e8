"""Stand-in without any supported entry point."""

VERSION = "0"
