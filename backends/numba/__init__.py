"""The Numba backend: float and integer kernels, memory planning and a generated driver.

Importing it limits how long idle OpenMP threads spin (``thread_pool``), and makes Numba's
kernel cache robust to corrupt files and keys it by the kernel choice settings
(``numba_cache``).
"""

from irc.backends.numba.thread_pool import limit_spinning

limit_spinning()

from irc.backends.numba.numba_cache import guard_cache, key_by_kernel_choice  # noqa: E402

guard_cache()
key_by_kernel_choice()
