"""Code generators that turn the lowest IR level into executable kernels."""
