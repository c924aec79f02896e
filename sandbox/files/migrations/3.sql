CREATE TABLE labels (id serial PRIMARY KEY, issue_id integer REFERENCES issues (id), name text);
UPDATE issues SET title = upper(title);
