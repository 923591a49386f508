"""Pure planning functions: memory budget, KV cache, checks with fixes, rendering."""
