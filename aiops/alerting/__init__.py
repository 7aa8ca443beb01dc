"""From alerts to notifications: routing, templates, selectors and notifiers' contract."""
