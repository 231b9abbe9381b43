"""The schema migrations. They ship in the wheel as the package data of ``shared.sql`` (see ``shared.migrations``)."""
