# The Python client class from the seed guide (quota-proxy API 使用指南), unchanged,
# followed by checks of what it returns. Run: python3 seed_client.py BASE_URL API_KEY QUOTA
import requests
import json

class QuotaProxyClient:
    def __init__(self, base_url, api_key):
        self.base_url = base_url
        self.api_key = api_key
        self.headers = {
            "X-API-Key": api_key,
            "Content-Type": "application/json"
        }
    
    def validate_key(self):
        """验证API密钥"""
        response = requests.get(
            f"{self.base_url}/api/v1/validate",
            headers=self.headers
        )
        return response.json()
    
    def use_quota(self, amount, reason, metadata=None):
        """使用配额"""
        data = {
            "amount": amount,
            "reason": reason
        }
        if metadata:
            data["metadata"] = metadata
        
        response = requests.post(
            f"{self.base_url}/api/v1/use",
            headers=self.headers,
            json=data
        )
        return response.json()
    
    def get_quota(self):
        """获取配额信息"""
        response = requests.get(
            f"{self.base_url}/api/v1/quota",
            headers=self.headers
        )
        return response.json()

if __name__ == "__main__":
    import sys
    base, key, quota = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # 使用示例
    client = QuotaProxyClient(base, key)
    v = client.validate_key()
    print(v)
    assert v["valid"] is True and v["remaining"] == quota, v
    u = client.use_quota(1, "test_call", {"model": "gpt-4"})
    print(u)
    assert u["success"] is True and u["amountUsed"] == 1 and u["remaining"] == quota - 1, u
    q = client.get_quota()
    print(q)
    assert q["used"] == 1 and q["remaining"] == quota - 1, q
    print("python seed client OK")
