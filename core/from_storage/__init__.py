"""Work that comes from object storage and goes back to it: Pub/Sub and Eventarc events, Cloud Run
batch jobs, and the storage they read and write.
"""
