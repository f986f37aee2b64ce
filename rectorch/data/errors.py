"""The one exception type for bad or missing input data."""


class DataError(ValueError):
    """Input data is missing or malformed; the message names the file, the column and the value."""
