"""video subpackage."""
