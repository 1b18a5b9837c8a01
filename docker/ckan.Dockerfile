# CKAN 2.12 (official base image) with ckanext-dcat for the DCAT-AP endpoints.
FROM ckan/ckan-base:2.12
# The base image runs as the unprivileged "ckan" user; install into its environment as
# root, then drop back to it.
USER root
RUN pip install --no-cache-dir ckanext-dcat==2.4.4
USER ckan
