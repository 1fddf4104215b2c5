"""The trust programme (放心消费): applications, merchant portal, lists, status feed, webhooks."""
