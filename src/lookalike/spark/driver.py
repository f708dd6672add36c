"""Entry script for ``spark-submit`` (which needs a file, not a module).

    spark-submit --master spark://host:7077 "$(python -m lookalike.spark.driver)" spark index hdfs:///photos --out …

Run as a module it prints its own path; run by spark-submit it is the ``lookalike`` CLI, and
the session uses spark-submit's ``--master`` and ``--conf`` settings.
"""

if __name__ == "__main__":
    import sys

    if "PYSPARK_GATEWAY_PORT" not in __import__("os").environ and len(sys.argv) == 1:
        print(__file__)
    else:
        from lookalike.cli import main

        main()
