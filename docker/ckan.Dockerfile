# CKAN 2.12 (official base image) with ckanext-dcat for the DCAT-AP endpoints.
FROM ckan/ckan-base:2.12
# The base image runs as the unprivileged "ckan" user; install into its environment as
# root, then drop back to it.
USER root
RUN pip install --no-cache-dir ckanext-dcat==2.4.4
COPY refuse-placeholders /usr/local/bin/opencity-refuse-placeholders
USER ckan
# Refuse to start with a change-me placeholder, then the base image's start script (an
# ENTRYPOINT resets the inherited CMD, so it is named again).
ENTRYPOINT ["/usr/local/bin/opencity-refuse-placeholders"]
CMD ["/srv/app/start_ckan.sh"]
