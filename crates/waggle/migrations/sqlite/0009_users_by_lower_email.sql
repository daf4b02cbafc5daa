-- Dashboard users are looked up by lower(email), as on PostgreSQL, since both backends
-- now share that query: an index on the expression keeps the lookup a seek.
CREATE INDEX dashboard_users_by_lower_email ON dashboard_users (lower(email));
