"""Wall time of `hspi --help` and `hspi db build --help` in fresh processes (lazy imports keep
it short: no runtime is imported). Prints the median of 5 runs each.

    python bench/help_time.py
"""

import statistics
import subprocess
import sys
import time


def main() -> None:
    for args in (["--help"], ["db", "build", "--help"], ["match", "--help"]):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "hspi_onnx.cli", *args], capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        print(
            f"hspi {' '.join(args)}: median {statistics.median(times):.2f} s over 5 runs "
            f"(min {min(times):.2f}, max {max(times):.2f})"
        )


if __name__ == "__main__":
    main()
