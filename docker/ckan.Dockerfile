# CKAN 2.12 (official base image) with ckanext-dcat for the DCAT-AP endpoints.
FROM ckan/ckan-base:2.12
RUN pip install --no-cache-dir ckanext-dcat==2.4.4
