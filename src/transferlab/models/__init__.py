"""Networks: building Dense stacks, loading reused layers safely (the zoo)."""
