from pipeline import startup

startup.starting()

from pipeline.cli import main  # noqa: E402  (imported with the collector off)

main()
