"""transferlab: compare ways of reusing a pretrained Keras network on a new task with few labels."""
