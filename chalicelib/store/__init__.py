"""PynamoDB models and the only code that reads or writes DynamoDB.

Every partition key starts with the merchant id, so a merchant's key can only
ever reach that merchant's records.
"""
