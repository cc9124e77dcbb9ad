"""The Numba backend: float and integer kernels, memory planning and a generated driver.

Importing it makes Numba's kernel cache robust to corrupt files and keys it by the kernel
choice settings (``numba_cache``).
"""

from irc.backends.numba.numba_cache import guard_cache, key_by_kernel_choice

guard_cache()
key_by_kernel_choice()
