"""The relational store: schema, migrations, bulk writes, periods and retention."""
