"""Usage metering: hourly counts per project, as an exactly-once cron job."""
