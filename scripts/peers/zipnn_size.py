#!/usr/bin/env python3
"""Prints the bytes ZipNN 0.5.4 compresses a whole file to, as its users run
it: one instance, ``ZipNN(bytearray_dtype=DTYPE, threads=2)``, its default
method, ``compress`` of the file's bytes.

    zipnn_size.py FILE DTYPE      (DTYPE: bfloat16, float16 or float32)
"""
import sys

from zipnn import ZipNN

data = open(sys.argv[1], "rb").read()
print(len(ZipNN(bytearray_dtype=sys.argv[2], threads=2).compress(data)))
