"""Writes the alphabet example's sample input: framed `>IsI` votes from a fixed seed.

python3 make_votes.py votes.msg 2000
"""

import random
import string
import struct
import sys


def main():
    path, count = sys.argv[1], int(sys.argv[2])
    rng = random.Random(2026)
    with open(path, "wb") as out:
        for _ in range(count):
            letter = rng.choice(string.ascii_lowercase).encode()
            payload = struct.pack(">sI", letter, rng.randint(1, 100))
            out.write(struct.pack(">I", len(payload)) + payload)


if __name__ == "__main__":
    main()
