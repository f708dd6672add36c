"""Apache Spark jobs.

The only package that imports pyspark (inside functions), so the rest of lookalike never
needs Java.
"""
