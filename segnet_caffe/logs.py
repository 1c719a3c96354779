"""Caffe-shaped logging: glog line prefixes (so Caffe's parse_log.py reads our logs) and a
handler that keeps a tqdm progress bar intact."""
import logging
import os
import sys
import time

LOGGER_NAME = "segnet_caffe"


class GlogFormatter(logging.Formatter):
    """`I1124 09:15:17.420675 13180 solver.py:214] message`, as glog writes."""

    def format(self, record):
        seconds = int(record.created)
        micros = int((record.created - seconds) * 1e6)
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(seconds))
        level = record.levelname[0] if record.levelname[0] in "IWEF" else "I"
        return (f"{level}{stamp}.{micros:06d} {os.getpid():5d} "
                f"{record.filename}:{record.lineno}] {record.getMessage()}")


class TqdmHandler(logging.StreamHandler):
    """Writes through tqdm so an active progress bar is redrawn below the log line."""

    def emit(self, record):
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never take the run down
            self.handleError(record)


def get_logger():
    """The package logger; on first use it logs INFO in glog format to stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = TqdmHandler(sys.stderr)
        handler.setFormatter(GlogFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def add_log_file(path):
    """Also log to `path`, starting with glog's header line (parse_log.py reads the year from it)."""
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(GlogFormatter())
    with open(path, "a") as stream:
        stream.write(time.strftime("Log file created at: %Y/%m/%d %H:%M:%S\n"))
    get_logger().addHandler(handler)
    return handler
