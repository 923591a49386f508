"""Starting, watching and stopping vLLM servers, and naming why one died."""
