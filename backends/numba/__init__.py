"""The Numba backend: float and integer kernels, memory planning and a generated driver.

Importing it makes Numba's kernel cache robust to corrupt files (``numba_cache``).
"""

from irc.backends.numba.numba_cache import guard_cache

guard_cache()
