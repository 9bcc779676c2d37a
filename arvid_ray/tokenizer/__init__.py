"""tokenizer subpackage."""
