"""The stand-in's version: the cuML whose signatures it copies, marked as a stand-in."""

__version__ = "26.10.00+standin"
__git_commit__ = ""
