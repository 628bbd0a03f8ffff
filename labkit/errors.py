"""The library's own exception for settings that cannot work, whatever the data."""


class SettingsError(ValueError):
    """Settings that cannot work together (a sample larger than the data, an impossible device
    request...). The message is one line; the command line shows it as the error."""
