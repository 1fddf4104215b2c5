"""The MQTT side: ingest loop, the pipeline of one batch, acknowledgements, workers, commands."""
